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


def group_changes(runs: list[dict], key: str):
    """Like group_curves for the eval curve `key`, each run less its own start value: runs of
    one seed share their start (one SFT), so the seed-to-seed spread of the start drops out."""
    shifted = []
    for r in runs:
        x, y = curve(r["records"], "eval", key)
        recs = [{"phase": "eval", "iteration": i, key: v - y[0]} for i, v in zip(x, y)]
        shifted.append({"records": recs})
    return group_curves(shifted, "eval", key)


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

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
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
    ax = axes[3]
    for name, runs in groups.items():
        x, mean, lo, hi = group_changes(runs, f"eval/acc/{hardest}")
        ax.plot(x, mean, label=f"{name} (n={len(runs)})")
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="RL iteration", title=f"{hardest} change from the start of RL, per seed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "comparison.png", dpi=110)

    bands = list(next(iter(groups.values()))[0]["summary"]["eval_accuracy_by_band"]["end"])
    lines = [
        "| experiment | seeds | "
        + " | ".join(f"{b} start -> end" for b in bands)
        + f" | {hardest} change per seed |",
        "|---|---|" + "---|" * (len(bands) + 1),
    ]
    for name, runs in groups.items():
        cells = []
        for b in bands:
            s = np.array([r["summary"]["eval_accuracy_by_band"]["start"][b] for r in runs])
            e = np.array([r["summary"]["eval_accuracy_by_band"]["end"][b] for r in runs])
            cells.append(f"{s.mean():.1%} -> {e.mean():.1%} (±{e.std():.1%})")
        acc = [r["summary"]["eval_accuracy_by_band"] for r in runs]
        changes = ", ".join(f"{100 * (a['end'][hardest] - a['start'][hardest]):+.0f}" for a in acc)
        cells.append(f"{changes} pts")
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "comparison.md").write_text(table + "\n")
    print(table)
    print(args.out)


if __name__ == "__main__":
    main()
