import sys

tokens = sys.stdin.buffer.read().split()
n, i, s = int(tokens[0]), 0, 0
while i < n:
    s += int(tokens[1 + i])
    i += 1
sys.stdout.write(f"{s}\n")
