import sys

data = sys.stdin.read().split()
a = sorted(map(int, data[1:]))
print(a[0])
