n = int(input())
a = input().split()
best = float("inf")
for i in range(n):
    best = min(best, int(a[i]))
print(best)
