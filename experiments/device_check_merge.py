"""Builds device_check.json from the per-part files of `experiments/device_check.sh`.

    python experiments/device_check_merge.py TMPDIR OUT.json

Each part NAME left TMPDIR/NAME.status (rc, seconds, timed_out), NAME.out (stdout; for the
benches its last line is one JSON object) and NAME.err. The schema is in
docs/performance.md.
"""

import datetime
import json
import pathlib
import socket
import sys


def last_json(text: str):
    """The last line of `text` that parses as a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def part_entry(tmp: pathlib.Path, name: str) -> dict:
    entry = json.loads((tmp / f"{name}.status").read_text())
    out = (tmp / f"{name}.out").read_text(errors="replace")
    err = (tmp / f"{name}.err").read_text(errors="replace")
    if name == "kernels":  # pytest's summary line, e.g. "12 passed, 1 skipped in 30.1s"
        lines = [x for x in out.splitlines() if " passed" in x or " failed" in x]
        entry["summary"] = lines[-1].strip("= ") if lines else None
    else:
        entry["result"] = last_json(out)
    if entry["rc"] != 0:
        entry["stderr_tail"] = err[-2000:]
    return entry


def main(tmp: str, out: str) -> None:
    tmp_dir = pathlib.Path(tmp)
    names = sorted(p.stem for p in tmp_dir.glob("*.status"))
    doc = {
        "schema": "k15_jax device_check v1",
        "host": socket.gethostname(),
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "parts": {name: part_entry(tmp_dir, name) for name in names},
    }
    pathlib.Path(out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
