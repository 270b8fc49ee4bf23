# Wrong: sums all positive values (a subsequence, not a contiguous subarray).
n = int(input())
a = list(map(int, input().split()))
pos = [x for x in a if x > 0]
print(sum(pos) if pos else max(a))
