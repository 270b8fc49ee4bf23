import sys

tok = sys.stdin.read().split()
n = int(tok[0])
best, cur = None, 0
for t in tok[1 : n + 1]:
    x = int(t)
    cur = max(cur + x, x) if best is not None else x
    best = cur if best is None else max(best, cur)
print(best)
