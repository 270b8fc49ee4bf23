# Wrong (but shipped among the "ground truth"): allows the empty subarray, so an
# all-negative array gives 0 instead of its largest element.
n = int(input())
a = list(map(int, input().split()))
best = cur = 0
for x in a:
    cur = max(0, cur + x)
    best = max(best, cur)
print(best)
