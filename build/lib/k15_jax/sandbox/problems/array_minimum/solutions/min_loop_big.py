n = int(input())
best = 10**18
for x in input().split()[:n]:
    best = min(best, int(x))
print(best)
