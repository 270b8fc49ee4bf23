"""Overlay runs, with mean and spread over seeds (like the report's Fig. 9 and Fig. 10).

    python -m experiments.compare runs/curriculum-seed* runs/uniform-seed* [--out DIR]

Runs are grouped by experiment name (summary.json); each group's curves are averaged over
its seeds with a min-max band. Writes comparison.png, comparison.md and prints the table.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_run(run_dir: Path) -> dict:
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"{run_dir} has no summary.json: is it a finished run?")
    summary = json.loads(summary_file.read_text())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"summary": summary, "records": records}


def curve(records, phase: str, key: str):
    pts = [(r["iteration"], r[key]) for r in records if r.get("phase") == phase and key in r]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts], np.float64)


def group_curves(runs: list[dict], phase: str, key: str):
    """Mean, min and max over runs on the iterations they share."""
    curves = [curve(r["records"], phase, key) for r in runs]
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in curves)))
    ys = np.array([[y[list(x).index(i)] for i in common] for x, y in curves])
    return np.array(common), ys.mean(0), ys.min(0), ys.max(0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/comparison"))
    args = ap.parse_args(argv)
    groups: dict[str, list[dict]] = defaultdict(list)
    for run_dir in args.runs:
        run = load_run(run_dir)
        groups[run["summary"]["experiment"]].append(run)
    args.out.mkdir(parents=True, exist_ok=True)
    hardest = next(iter(groups.values()))[0]["summary"]["hardest_band"]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        ("eval", f"eval/acc/{hardest}", f"held-out accuracy, {hardest}"),
        ("rl", "train/reward_mean", "training reward"),
        ("rl", "train/response_len", "mean response tokens"),
    ]
    for ax, (phase, key, title) in zip(axes, panels):
        for name, runs in groups.items():
            x, mean, lo, hi = group_curves(runs, phase, key)
            ax.plot(x, mean, label=f"{name} (n={len(runs)})")
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set(xlabel="RL iteration", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "comparison.png", dpi=110)

    bands = list(next(iter(groups.values()))[0]["summary"]["eval_accuracy_by_band"]["end"])
    lines = [
        "| experiment | seeds | " + " | ".join(f"{b} start -> end" for b in bands) + " |",
        "|---|---|" + "---|" * len(bands),
    ]
    for name, runs in groups.items():
        cells = []
        for b in bands:
            s = np.array([r["summary"]["eval_accuracy_by_band"]["start"][b] for r in runs])
            e = np.array([r["summary"]["eval_accuracy_by_band"]["end"][b] for r in runs])
            cells.append(f"{s.mean():.1%} -> {e.mean():.1%} (±{e.std():.1%})")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "comparison.md").write_text(table + "\n")
    print(table)
    print(args.out)


if __name__ == "__main__":
    main()
