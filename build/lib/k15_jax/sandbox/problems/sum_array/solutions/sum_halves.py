def total(a, lo, hi):
    if hi - lo == 1:
        return a[lo]
    mid = (lo + hi) // 2
    return total(a, lo, mid) + total(a, mid, hi)


n = int(input())
a = list(map(int, input().split()))
print(total(a, 0, n))
