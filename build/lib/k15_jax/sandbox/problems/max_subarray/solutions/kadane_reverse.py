# Kadane from the right end; the answer is the same.
n = int(input())
a = list(map(int, input().split()))[::-1]
best = cur = -(10**18)
for x in a:
    cur = x if cur < 0 else cur + x
    best = max(best, cur)
print(best)
