"""Plots and tables of the loss comparison (docs/losses.md), from the runs of
experiments/losses.sh.

    python -m experiments.losses_report --runs runs/losses --out docs

Groups runs by experiment name (summary.json), averages over seeds with a min-max band, and
writes docs/img/losses-<set>.png and the tables between the `<!-- <set>:begin -->` and
`<!-- <set>:end -->` markers of docs/losses.md (the prose around them is kept). Sets: "main"
(the five arms) and "partial" (partial rollouts under each off-policy option). A set whose
runs are missing is skipped and says so.
"""

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.compare import curve, group_changes, load_run  # noqa: E402

ARMS = {
    "curriculum": "mirror descent (k1.5)",
    "grpo": "GRPO",
    "dapo": "DAPO",
    "gspo": "GSPO",
    "cispo": "CISPO",
}
OPTIONS = ("exclude_old", "none", "tis", "mask")
SEEDS = (0, 1, 2)


def sets(partial_arms=("curriculum", "grpo")) -> dict:
    main = {name: label for name, label in ARMS.items()}
    partial = {f"{a}-partial-{op}": f"{ARMS[a]}, {op}" for a in partial_arms for op in OPTIONS}
    return {"main": main, "partial": partial}


def eval_tokens(records) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sampled tokens before each eval point: (eval iterations, tokens)."""
    it, tok = curve(records, "rl", "rollout/tokens_generated")
    cum = np.concatenate([[0.0], np.cumsum(tok)])
    x, _ = curve(records, "eval", "eval/acc/add1")
    return x, cum[np.minimum(x, len(tok)).astype(int)]


def _band(ax, xs, ys, label):
    """Mean with a min-max band over runs; xs, ys: per-run arrays on the same eval points."""
    n = min(len(y) for y in ys)
    y = np.array([v[:n] for v in ys])
    x = np.mean([v[:n] for v in xs], axis=0)
    ax.plot(x, y.mean(0), label=f"{label} (n={len(ys)})")
    ax.fill_between(x, y.min(0), y.max(0), alpha=0.15)


def plot(groups: dict, labels: dict, bands: list[str], path: Path) -> None:
    cols = max(len(bands), 5)  # the third row has five panels
    fig, axes = plt.subplots(3, cols, figsize=(4 * cols, 10.5))
    for name, runs in groups.items():
        label = labels[name]
        recs = [r["records"] for r in runs]
        for j, band in enumerate(bands):
            evals = [curve(rec, "eval", f"eval/acc/{band}") for rec in recs]
            _band(axes[0, j], [x for x, _ in evals], [y for _, y in evals], label)
            tok = [eval_tokens(rec)[1] / 1e6 for rec in recs]
            _band(axes[1, j], tok, [y for _, y in evals], label)
        panels = [
            ("rl", "train/response_len", "mean response tokens (sampled)"),
            ("eval", f"eval/len/{bands[-1]}", f"held-out response tokens, {bands[-1]}"),
            ("rl", "time/iteration_s", "wall time per iteration (s)"),
            ("rl", "train/reward_mean", "training reward"),
        ]
        for ax, (phase, key, title) in zip(axes[2], panels, strict=False):
            cs = [curve(rec, phase, key) for rec in recs]
            if all(len(y) for _, y in cs):
                _band(ax, [x for x, _ in cs], [y for _, y in cs], label)
            ax.set(title=title, xlabel="RL iteration")
        x, mean, lo, hi = group_changes(runs, f"eval/acc/{bands[-1]}")
        axes[2, 4].plot(x, mean, label=label)
        axes[2, 4].fill_between(x, lo, hi, alpha=0.15)
        axes[2, 4].set(title=f"{bands[-1]} change from the start, per seed", xlabel="RL iteration")
    for j, band in enumerate(bands):
        axes[0, j].set(title=f"held-out accuracy, {band}", xlabel="RL iteration")
        axes[1, j].set(title=f"held-out accuracy, {band}", xlabel="sampled tokens (millions)")
    axes[0, -1].legend(fontsize=7)
    axes[2, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def start_end(run) -> dict:
    """{"start", "end"}: accuracy per band, re-scored (experiments.losses_reeval: the SFT
    params of the run's seed, the run's final params) when available, else as logged."""
    re, seed = run.get("reeval", {}), run["summary"]["seed"]
    if run["dir"] in re and f"sft-seed{seed}" in re:
        return {"start": re[f"sft-seed{seed}"], "end": re[run["dir"]]}
    return run["summary"]["eval_accuracy_by_band"]


def _mean_rl(records, key) -> float:
    _, y = curve(records, "rl", key)
    return float(y.mean()) if len(y) else float("nan")


def tables(groups: dict, labels: dict, bands: list[str]) -> str:
    """Per arm and seed: accuracy start -> end per band; then per arm: mean end accuracy with
    its spread over seeds, the change of each band, wall time and tokens per iteration."""
    head = "| arm | seed | " + " | ".join(bands) + " | s / iteration | tokens / iteration |"
    lines = [
        "#### Held-out greedy accuracy per band (%), start -> end of RL, per seed",
        "",
        "Start: the seed's SFT params; end: the run's final params; both re-scored by",
        "`experiments.losses_reeval` where its `reeval.json` has them (else as logged).",
        "",
    ]
    lines += [head, "|---|---|" + "---|" * (len(bands) + 2)]
    for name, runs in groups.items():
        for r in runs:
            acc = start_end(r)
            cells = [f"{100 * acc['start'][b]:.0f} -> {100 * acc['end'][b]:.0f}" for b in bands]
            t = _mean_rl(r["records"], "time/iteration_s")
            tok = _mean_rl(r["records"], "rollout/tokens_generated")
            seed = r["summary"]["seed"]
            lines.append(
                f"| {labels[name]} | {seed} | " + " | ".join(cells) + f" | {t:.2f} | {tok:.0f} |"
            )
    lines += ["", "#### Mean over seeds: end accuracy ± std (change from start, min..max)", ""]
    lines += [
        "| arm | seeds | " + " | ".join(bands) + " | s / iteration | response tokens (end) |",
        "|---|---|" + "---|" * (len(bands) + 2),
    ]
    for name, runs in groups.items():
        cells = []
        for b in bands:
            s = np.array([start_end(r)["start"][b] for r in runs])
            e = np.array([start_end(r)["end"][b] for r in runs])
            d = 100 * (e - s)
            cells.append(
                f"{100 * e.mean():.1f} ± {100 * e.std():.1f} ({d.mean():+.1f}, "
                f"{d.min():+.0f}..{d.max():+.0f})"
            )
        t = np.array([_mean_rl(r["records"], "time/iteration_s") for r in runs])
        lens = [curve(r["records"], "rl", "train/response_len")[1] for r in runs]
        end_len = np.mean([y[-10:].mean() for y in lens])
        lines.append(
            f"| {labels[name]} | {len(runs)} | "
            + " | ".join(cells)
            + f" | {t.mean():.2f} ± {t.std():.2f} | {end_len:.1f} |"
        )
    return "\n".join(lines)


def update_table(groups: dict, labels: dict) -> str:
    """Mean over iterations and seeds of the update's diagnostics (the `_last` ones are taken
    after the M-th step, where the policy has moved from pi_theta_i; runs that predate them
    show nan)."""
    keys = [
        ("train/mixed_groups", "groups with a signal"),
        ("train/clip_frac_last", "clipped share, last step"),
        ("train/ratio_mean_last", "mean ratio, last step"),
        ("train/kl_k3_last", "k3 KL to pi_old, last step"),
        ("train/grad_norm", "grad norm"),
    ]
    lines = ["| arm | " + " | ".join(k[1] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, runs in groups.items():
        cells = [f"{np.nanmean([_mean_rl(r['records'], k) for r in runs]):.4g}" for k, _ in keys]
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def offpolicy_table(groups: dict, labels: dict) -> str:
    """Mean over iterations and seeds of the partial-rollout and off-policy metrics."""
    keys = [
        ("rollout/spanning_frac", "trajectories spanning >= 2 iterations"),
        ("offpolicy/old_frac", "loss tokens from older iterations"),
        ("offpolicy/changed_frac", "tokens excluded / truncated / masked"),
        ("rollout/logp_gap_age0_mean", "gap, this iteration's tokens"),
        ("rollout/logp_gap_age1_mean", "gap, 1 iteration old"),
        ("rollout/logp_gap_max", "gap max"),
        ("offpolicy/weight_max", "weight max"),
    ]
    lines = ["| run | " + " | ".join(k[1] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, runs in groups.items():
        cells = []
        for key, _ in keys:
            vals = [_mean_rl(r["records"], key) for r in runs]
            if key.endswith("_max"):
                vals = [curve(r["records"], "rl", key)[1].max() for r in runs]
            cells.append(f"{np.nanmean(vals):.4g}")
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_block(text: str, tag: str, body: str) -> str:
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    if begin not in text:
        return text + f"\n{begin}\n{body}\n{end}\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/losses"))
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--partial-arms", nargs="+", default=["curriculum", "grpo"])
    args = ap.parse_args(argv)
    reeval_file = args.runs / "reeval.json"
    reeval = json.loads(reeval_file.read_text()) if reeval_file.exists() else {}
    doc = args.out / "losses.md"
    text = doc.read_text() if doc.exists() else "# Losses\n"
    for set_name, labels in sets(tuple(args.partial_arms)).items():
        groups = {}
        for name in labels:
            dirs = [args.runs / f"{name}-seed{s}" for s in SEEDS]
            done = [d for d in dirs if (d / "summary.json").is_file()]
            if done:
                groups[name] = [{**load_run(d), "dir": d.name, "reeval": reeval} for d in done]
        if not groups:
            print(f"{set_name}: no finished runs under {args.runs}; skipped")
            continue
        first = next(iter(groups.values()))[0]["summary"]
        bands = list(first["eval_accuracy_by_band"]["end"])
        plot(groups, labels, bands, args.out / "img" / f"losses-{set_name}.png")
        body = tables(groups, labels, bands)
        body += "\n\n#### The update (mean over iterations and seeds)\n\n" + update_table(
            groups, labels
        )
        if set_name == "partial":
            body += (
                "\n\n#### Partial rollouts and off-policy metrics (mean over iterations, seeds)\n\n"
            )
            body += offpolicy_table(groups, labels)
        text = replace_block(text, set_name, body)
        print(f"{set_name}: {sum(len(v) for v in groups.values())} runs")
    doc.write_text(text)
    print(doc)


if __name__ == "__main__":
    main()
