"""Resume bookkeeping of commands that score prompts into an append-only results.jsonl.

A run appends one row per scored prompt (`k15_jax.data.curation.append_records`), and a
re-run of the same command skips every id already there (`completed_ids`, which also cuts
a line torn by a kill). `check_settings` keeps rows of different settings (model, sampling,
template, data) out of one file: it records them beside the results and refuses to resume
under other ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from k15_jax.data.curation import completed_ids, read_records

RESULTS = "results.jsonl"
SETTINGS = "settings.json"


def flat(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (for naming the keys that changed)."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuses to mix rows of different settings in one results file; records them."""
    out_dir = Path(out_dir)
    path, results = out_dir / SETTINGS, out_dir / RESULTS
    if path.is_file() and results.is_file():
        old, new = flat(json.loads(path.read_text())), flat(json.loads(json.dumps(settings)))
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
            raise ValueError(
                f"{results} holds rows scored with other settings ({changes}); set output_dir "
                "to a new folder, or delete that folder to start over"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True))


def done_ids(out_dir: Path) -> set[str]:
    """Ids with a row in out_dir/results.jsonl (a torn last line is cut off)."""
    return completed_ids(Path(out_dir) / RESULTS)


def rows_for(out_dir: Path, ids: list[str]) -> list[dict]:
    """The rows of `ids`, in that order (rows of ids outside a smaller `limit` are kept in
    the file but not returned)."""
    by_id = {r["id"]: r for r in read_records(Path(out_dir) / RESULTS)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise RuntimeError(
            f"{out_dir / RESULTS} has no row for {missing[:3]}; re-run to score them"
        )
    return [by_id[i] for i in ids]
