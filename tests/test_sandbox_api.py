"""HTTP API of the sandbox service: /run and /judge results, and malformed requests (4xx)."""

import http.client
import json
import random
import socket

import pytest

from k15_jax.sandbox import SandboxError, start_sandbox

ADD_PY = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD_CPP = (
    "#include <cstdio>\nint main(){long long a,b;"
    'if(scanf("%lld %lld",&a,&b)!=2)return 3;printf("%lld\\n",a+b);}\n'
)


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(workers=2, read_timeout_s=2.0) as client:
        yield client


def raw_request(client, method, path, body=b"", headers=None):
    """(status, parsed JSON or raw text) for a hand-made request."""
    host, port = client.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, data.decode(errors="replace")


def test_health(sandbox):
    h = sandbox.health()
    assert h["status"] == "ok" and h["secure"] is True
    assert {"python", "cpp"} <= set(h["languages"])


@pytest.mark.parametrize("language,src", [("python", ADD_PY), ("cpp", ADD_CPP)])
def test_run_and_judge_add(sandbox, language, src):
    rng = random.Random(0)
    pairs = [(rng.randint(-(10**12), 10**12), rng.randint(-(10**12), 10**12)) for _ in range(4)]
    r = sandbox.run(language, src, f"{pairs[0][0]} {pairs[0][1]}\n")
    assert r["verdict"] == "OK" and int(r["stdout"]) == pairs[0][0] + pairs[0][1]
    # Two cases carry a wrong expected answer; they must be the only WAs.
    wrong = {1, 3}
    cases = [
        {"stdin": f"{a} {b}\n", "expected": f"{a + b + (k in wrong)}\n"}
        for k, (a, b) in enumerate(pairs)
    ]
    j = sandbox.judge(language, src, cases, id=f"req-{language}")
    assert j["id"] == f"req-{language}"
    assert [c["verdict"] for c in j["cases"]] == ["WA" if k in wrong else "AC" for k in range(4)]
    assert j["pass_fraction"] == (4 - len(wrong)) / 4
    assert j["verdict"] == "WA"


def test_judge_run_verdicts_and_stop(sandbox):
    src = "n = int(input())\nif n < 0:\n    while True: pass\n"
    src += "if n == 0:\n    raise SystemExit(3)\nprint(n * 2)\n"
    cases = [
        {"stdin": "4\n", "expected": "8\n"},
        {"stdin": "0\n", "expected": "0\n"},
        {"stdin": "-1\n", "expected": "-2\n"},
        {"stdin": "5\n", "expected": "10"},  # a missing final newline is fine for "lines"
    ]
    j = sandbox.judge("python", src, cases, time_limit_s=0.3)
    assert [c["verdict"] for c in j["cases"]] == ["AC", "RE", "TLE", "AC"]
    assert j["pass_fraction"] == 0.5 and j["verdict"] == "RE"
    j = sandbox.judge("python", src, cases, time_limit_s=0.3, stop_on_first_failure=True)
    assert [c["verdict"] for c in j["cases"]] == ["AC", "RE", "SKIPPED", "SKIPPED"]


def test_judge_compile_error_and_checkers(sandbox):
    j = sandbox.judge("cpp", "int main() { return }", [{"stdin": "", "expected": ""}] * 3)
    assert j["verdict"] == "CE" and j["pass_fraction"] == 0.0
    assert "error" in j["compile_stderr"]
    src = "print('1  2')\nprint('3 ')\n"
    verdicts = {
        checker: sandbox.judge("python", src, [("", "1 2\n3\n")], checker=checker)["verdict"]
        for checker in ("exact", "lines", "tokens")
    }
    assert verdicts == {"exact": "WA", "lines": "WA", "tokens": "AC"}
    lines = sandbox.judge("python", src, [("", "1  2\n3\n\n")], checker="lines")
    assert lines["verdict"] == "AC"


def test_large_stdin_and_unread_stdin(sandbox):
    data = "".join(f"{i}\n" for i in range(200_000))
    r = sandbox.run("python", "import sys\nprint(len(sys.stdin.read()))", data)
    assert (r["verdict"], int(r["stdout"])) == ("OK", len(data))
    r = sandbox.run("python", "print('ignored input')", data)
    assert (r["verdict"], r["stdout"]) == ("OK", "ignored input\n")


def test_python_syntax_error_is_ce(sandbox):
    r = sandbox.run("python", "def f(:\n    pass\n")
    assert r["verdict"] == "CE" and "SyntaxError" in r["stderr"]


def test_runtime_error_and_exit_code(sandbox):
    r = sandbox.run("python", "import sys\nprint('partial')\nsys.exit(7)")
    assert (r["verdict"], r["exit_code"], r["stdout"]) == ("RE", 7, "partial\n")


def valid_body(**over):
    body = {"language": "python", "source": "print(1)", "stdin": ""}
    body.update(over)
    return json.dumps(body).encode()


MALFORMED = [
    ("POST", "/run", b"{not json", {}, 400, "not valid JSON"),
    ("POST", "/run", b"\xff\xfe", {}, 400, "not valid JSON"),
    ("POST", "/run", b"[1, 2]", {}, 400, "JSON object"),
    ("POST", "/run", b"[" * 100_000, {}, 400, "not valid JSON"),
    ("POST", "/run", valid_body(time_limit_s=float("nan")), {}, 400, "time_limit_s"),
    ("POST", "/run", valid_body(memory_limit_mb=10**400), {}, 400, "memory_limit_mb"),
    ("POST", "/run", b'{"language": "python", "source": "\\ud800"}', {}, 400, "Unicode"),
    ("POST", "/run", json.dumps({"source": "x"}).encode(), {}, 400, "language"),
    ("POST", "/run", valid_body(language="cobol"), {}, 400, "unknown language"),
    ("POST", "/run", valid_body(source=5), {}, 400, "source"),
    ("POST", "/run", valid_body(time_limit_s=-1), {}, 400, "time_limit_s"),
    ("POST", "/run", valid_body(time_limit_s="1"), {}, 400, "time_limit_s"),
    ("POST", "/run", valid_body(time_limit_s=1e9), {}, 400, "time_limit_s"),
    ("POST", "/run", valid_body(memory_limit_mb=1), {}, 400, "memory_limit_mb"),
    ("POST", "/run", valid_body(memory_limit_mb=True), {}, 400, "memory_limit_mb"),
    ("POST", "/run", valid_body(id=[1]), {}, 400, "id"),
    ("POST", "/run", valid_body(colour="red"), {}, 400, "unknown field"),
    ("POST", "/judge", valid_body(), {}, 400, "unknown field"),
    (
        "POST",
        "/judge",
        json.dumps({"language": "python", "source": "", "cases": []}).encode(),
        {},
        400,
        "cases",
    ),
    (
        "POST",
        "/judge",
        json.dumps({"language": "python", "source": "", "cases": [5]}).encode(),
        {},
        400,
        "cases[0]",
    ),
    (
        "POST",
        "/judge",
        json.dumps(
            {"language": "python", "source": "", "checker": "fuzzy", "cases": [{"stdin": ""}]}
        ).encode(),
        {},
        400,
        "checker",
    ),
    ("POST", "/run", valid_body(), {"Content-Length": str(10**12)}, 413, "limit"),
    ("POST", "/run", valid_body(), {"Content-Length": "abc"}, 400, "Content-Length"),
    ("GET", "/nowhere", b"", {}, 404, "no endpoint"),
    ("POST", "/health", valid_body(), {}, 405, "POST"),
    ("GET", "/run", b"", {}, 405, "POST"),
    ("PUT", "/run", valid_body(), {}, 405, "not allowed"),
]


@pytest.mark.parametrize("method,path,body,headers,status,words", MALFORMED)
def test_malformed_request_gets_4xx(sandbox, method, path, body, headers, status, words):
    got, resp = raw_request(sandbox, method, path, body, headers)
    assert got == status, resp
    assert words in resp["error"]


def test_missing_length_and_short_body(sandbox):
    host, port = sandbox.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /run HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 411 " in s.recv(4096).split(b"\r\n")[0] + b" "
    with socket.create_connection((host, int(port)), timeout=30) as s:
        # Promises 1000 bytes, sends 10 and stalls: answered after read_timeout_s, no hang.
        s.sendall(b'POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"a": 1, ')
        assert b" 408 " in s.recv(4096).split(b"\r\n")[0] + b" "
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        assert b" 400 " in s.recv(4096).split(b"\r\n")[0] + b" "
    assert sandbox.health()["status"] == "ok"


def test_client_raises_with_message(sandbox):
    with pytest.raises(SandboxError) as e:
        sandbox.run("cobol", "DISPLAY 'HI'.")
    assert e.value.status == 400 and "unknown language" in e.value.message
