# Exact: positives and negatives summed separately as Python ints.
input()
a = [int(x) for x in input().split()]
print(sum(x for x in a if x > 0) - sum(-x for x in a if x < 0))
