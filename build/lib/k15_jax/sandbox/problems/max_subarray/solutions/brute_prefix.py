import itertools

n = int(input())
a = list(map(int, input().split()))
p = [0, *itertools.accumulate(a)]
print(max(p[r] - p[l] for l in range(n) for r in range(l + 1, n + 1)))
