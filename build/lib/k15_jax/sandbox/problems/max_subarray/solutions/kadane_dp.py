n = int(input())
a = list(map(int, input().split()))
dp = [0] * n  # dp[i]: best sum of a subarray ending at i
dp[0] = a[0]
for i in range(1, n):
    dp[i] = a[i] + max(dp[i - 1], 0)
print(max(dp))
