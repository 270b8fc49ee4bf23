import functools

input()
print(functools.reduce(min, map(int, input().split())))
