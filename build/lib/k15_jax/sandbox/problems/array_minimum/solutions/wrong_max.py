# Wrong: prints the largest value.
input()
print(max(map(int, input().split())))
