"""Command line: `python -m k15_jax.sandbox serve [--port 8765 ...]` and `... testgen`.

serve: every SandboxConfig field is a flag (--workers 4, --insecure true, ...).
testgen: runs the CYaRon pipeline on problem directories (default: the shipped examples)
against a running service (--url) or one it starts, prints the report as JSON.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from k15_jax.sandbox.config import SandboxConfig
from k15_jax.sandbox.toolchain import SandboxUnavailable


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        kind = _bool if f.type in (bool, "bool") else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)


def from_args(cls, args):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def main(argv=None) -> int:
    from k15_jax.sandbox.testgen import CaseGenConfig

    parser = argparse.ArgumentParser(prog="python -m k15_jax.sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dataclass_flags(sub.add_parser("serve", help="run the sandbox service"), SandboxConfig)
    tg = sub.add_parser("testgen", help="CYaRon test-case pipeline (report section 2.3.5)")
    tg.add_argument("problems", nargs="*", type=Path, help="problem dirs (default: examples)")
    tg.add_argument("--url", default="", help="a running service; default: start one")
    tg.add_argument("--workers", type=int, default=0)
    tg.add_argument("--out", type=Path, default=None, help="write kept problems as JSON lines")
    add_dataclass_flags(tg, CaseGenConfig)
    args = parser.parse_args(argv)

    if args.command == "serve":
        from k15_jax.sandbox.server import serve

        try:
            serve(from_args(SandboxConfig, args))
        except SandboxUnavailable as e:
            print(f"k15 sandbox: refusing to start: {e}", file=sys.stderr)
            return 2
        return 0

    from k15_jax.sandbox import testgen
    from k15_jax.sandbox.client import SandboxClient, start_sandbox

    cfg = from_args(CaseGenConfig, args)
    probs = [testgen.load_problem(p) for p in args.problems] or testgen.example_problems()
    if args.url:
        report = testgen.run_pipeline(SandboxClient(args.url), probs, cfg)
    else:
        with start_sandbox(workers=args.workers) as client:
            report = testgen.run_pipeline(client, probs, cfg)
    if args.out:
        testgen.write_dataset(report, args.out)
    for r in report["per_problem"]:
        r.pop("cases", None)
        r.pop("statement", None)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
