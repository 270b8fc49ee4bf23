def solve(a, lo, hi):
    if hi - lo == 1:
        return a[lo]
    mid = (lo + hi) // 2
    left = right = None
    s = 0
    for i in range(mid - 1, lo - 1, -1):
        s += a[i]
        left = s if left is None else max(left, s)
    s = 0
    for i in range(mid, hi):
        s += a[i]
        right = s if right is None else max(right, s)
    return max(solve(a, lo, mid), solve(a, mid, hi), left + right)


n = int(input())
a = list(map(int, input().split()))
print(solve(a, 0, n))
