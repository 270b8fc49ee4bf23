n = int(input())
a = list(map(int, input().split()))
prefix, low, best = 0, 0, None
for x in a:
    prefix += x
    cand = prefix - low
    best = cand if best is None else max(best, cand)
    low = min(low, prefix)
print(best)
