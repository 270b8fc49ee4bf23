import functools
import operator

input()
print(functools.reduce(operator.add, (int(x) for x in input().split()), 0))
