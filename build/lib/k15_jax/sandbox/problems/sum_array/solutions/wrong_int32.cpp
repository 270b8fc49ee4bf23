// Wrong: a 32-bit accumulator overflows on large sums.
#include <cstdio>

int main() {
    int n, s = 0;
    scanf("%d", &n);
    for (int i = 0; i < n; ++i) {
        int x;
        scanf("%d", &x);
        s += x;
    }
    printf("%d\n", s);
}
