n = int(input())
a = list(map(int, input().split()))
best = a[0]
for l in range(n):
    s = 0
    for r in range(l, n):
        s += a[r]
        best = max(best, s)
print(best)
