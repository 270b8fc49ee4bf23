import itertools

n = int(input())
a = [int(x) for x in input().split()]
print(list(itertools.accumulate(a))[-1])
