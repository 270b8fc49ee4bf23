"""Concurrent requests: none lost, duplicated or mixed up (issue acceptance 2).

Every request carries its own program, input and id, so a result delivered to the wrong
request, or computed from another request's program, shows up as a wrong value.
"""

import collections
import concurrent.futures

from k15_jax.sandbox import start_sandbox


def request(client, i: int) -> tuple[int, str, dict]:
    src = f"x = int(input())\nprint(x * {i} + {i})\n"
    stdin = f"{i + 7}\n"
    if i % 3 == 0:
        return i, "run", client.run("python", src, stdin, id=i)
    truth = (i + 7) * i + i
    expected = truth + 1 if i % 5 == 0 else truth  # every fifth judge must come back WA
    cases = [{"stdin": stdin, "expected": f"{expected}\n"}]
    return i, "judge", client.judge("python", src, cases, id=f"j{i}")


def hammer(n: int, workers: int) -> None:
    with start_sandbox(workers=workers) as client:
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: request(client, i), range(n)))
        health = client.health()
    assert sorted(i for i, _, _ in results) == list(range(n))
    ids = collections.Counter(r["id"] for _, _, r in results)
    assert all(c == 1 for c in ids.values()) and len(ids) == n
    for i, kind, r in results:
        truth = (i + 7) * i + i
        if kind == "run":
            assert (r["id"], r["verdict"], r["stdout"]) == (i, "OK", f"{truth}\n"), r
        else:
            want = "WA" if i % 5 == 0 else "AC"
            assert (r["id"], r["verdict"]) == (f"j{i}", want), r
            assert r["pass_fraction"] == (0.0 if i % 5 == 0 else 1.0)
    # Every request ran exactly one program (+1: the start-up self-test); nothing is in flight.
    assert health["runs_done"] == n + 1
    assert health["busy"] == 0 and health["waiting"] == 0


def test_40_concurrent_requests():
    hammer(40, workers=2)


def test_200_concurrent_requests():  # ~15 s on 2 busy cores, so it stays in the default run
    hammer(200, workers=2)
