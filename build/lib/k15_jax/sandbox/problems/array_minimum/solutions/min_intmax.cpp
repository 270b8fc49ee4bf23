#include <climits>
#include <cstdio>

int main() {
    int n, best = INT_MAX;
    scanf("%d", &n);
    for (int i = 0; i < n; ++i) {
        int x;
        scanf("%d", &x);
        if (x < best) best = x;
    }
    printf("%d\n", best);
}
