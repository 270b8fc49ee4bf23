import heapq

input()
a = [int(x) for x in input().split()]
heapq.heapify(a)
print(a[0])
