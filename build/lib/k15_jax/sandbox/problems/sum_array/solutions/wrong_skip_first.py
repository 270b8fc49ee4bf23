# Wrong: off by one, skips the first element.
n = int(input())
a = list(map(int, input().split()))
print(sum(a[1:]))
