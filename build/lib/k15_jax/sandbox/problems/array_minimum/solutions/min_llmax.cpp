#include <climits>
#include <iostream>

int main() {
    int n;
    std::cin >> n;
    long long best = LLONG_MAX;
    while (n-- > 0) {
        long long x;
        std::cin >> x;
        best = std::min(best, x);
    }
    std::cout << best << '\n';
}
