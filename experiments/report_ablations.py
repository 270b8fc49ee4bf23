"""The tables and plots of docs/ablations.md from the runs of experiments/ablations.sh.

    python -m experiments.report_ablations runs --out docs

Reads runs/<experiment>-seed<s>/ (summary.json, metrics.jsonl) and
runs/long2short-seed<s>/long2short/results.json; writes <out>/ablations-results.md and
<out>/img/ablation-*.png. Every figure is a mean over the seeds found, with the spread
(min..max or the per-seed values) beside it.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.compare import curve, group_curves, load_run  # noqa: E402

ARMS = {  # experiment name -> label
    "curriculum": "mirror descent, curriculum (main job)",
    "uniform": "mirror descent, uniform",
    "rest": "ReST",
    "length_penalty": "length penalty (warm-up 10)",
    "keep_zero_adv": "skip_zero_advantage=false",
}


def load_arms(runs: Path) -> dict[str, list[dict]]:
    """{experiment: [run, ...]} in seed order, for the finished runs under `runs`."""
    out = {}
    for name in ARMS:
        dirs = sorted(runs.glob(f"{name}-seed*"), key=lambda p: p.name)
        found = [load_run(d) for d in dirs if (d / "summary.json").is_file()]
        if found:
            out[name] = found
    return out


def spread(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.1%} ({', '.join(f'{x:.0%}' for x in v)})"


def tokens_spread(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.1f} ({', '.join(f'{x:.0f}' for x in v)})"


def band_table(arms: dict, names: list[str], bands: list[str]) -> list[str]:
    """Per arm and band: held-out accuracy at the start and end of RL, tokens at the end,
    tokens per correct answer (mean tokens / accuracy); mean over seeds (per seed)."""
    lines = [
        "| arm | seeds | band | accuracy start -> end (per seed) | tokens start -> end "
        "(per seed) | tokens per correct answer, end |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        runs = arms.get(name, [])
        if not runs:
            continue
        for b in bands:
            acc = [r["summary"]["eval_accuracy_by_band"] for r in runs]
            ln = [r["summary"]["eval_length_by_band"] for r in runs]
            a0, a1 = [x["start"][b] for x in acc], [x["end"][b] for x in acc]
            n0, n1 = [x["start"][b] for x in ln], [x["end"][b] for x in ln]
            per_correct = np.mean(n1) / max(np.mean(a1), 1e-9)
            lines.append(
                f"| {ARMS[name]} | {len(runs)} | {b} | {spread(a0)} -> {spread(a1)} | "
                f"{tokens_spread(n0)} -> {tokens_spread(n1)} | {per_correct:.1f} |"
            )
    return lines


def worst_other(arms: dict, names: list[str], others: list[str]) -> list[str]:
    """The largest drop of any easier band from the start of RL, per arm and seed."""
    out = []
    for name in names:
        drops = [
            min(
                r["summary"]["eval_accuracy_by_band"]["end"][b]
                - r["summary"]["eval_accuracy_by_band"]["start"][b]
                for b in others
            )
            for r in arms.get(name, [])
        ]
        if drops:
            out.append(
                f"- {ARMS[name]}: worst change of {', '.join(others)} per seed: "
                + ", ".join(f"{100 * d:+.0f} pts" for d in drops)
            )
    return out


def early_table(arms: dict, names: list[str], band: str, at=(5, 10, 15, 30)) -> list[str]:
    """Sample efficiency: accuracy on `band` after given iterations, and the tokens sampled
    by then (thousands); mean over seeds (per seed)."""
    lines = [
        "| arm | "
        + " | ".join(f"{band} at iteration {i}" for i in at)
        + " | sampled tokens by iteration 10 / 30 (thousands) |",
        "|---|" + "---|" * (len(at) + 1),
    ]
    for name in names:
        runs = arms.get(name, [])
        if not runs:
            continue
        cells = []
        for i in at:
            vals = []
            for r in runs:
                x, y = curve(r["records"], "eval", f"eval/acc/{band}")
                vals.append(float(y[list(x).index(i)]) if i in x else np.nan)
            cells.append(spread(vals))
        tok = []
        for r in runs:
            at_it = dict(zip(*(v.tolist() for v in sampled_tokens(r["records"]))))
            tok.append(f"{at_it.get(10, np.nan) / 1e3:.0f} / {at_it.get(30, np.nan) / 1e3:.0f}")
        lines.append(f"| {ARMS[name]} | " + " | ".join(cells) + f" | {', '.join(tok)} |")
    return lines


def sampled_tokens(records) -> tuple[np.ndarray, np.ndarray]:
    """(iteration, cumulative sampled tokens after it) of a run's RL records."""
    it, tok = curve(records, "rl", "rollout/tokens_generated")
    return it + 1, np.cumsum(tok)


def train_vs_tokens(run: dict, key: str):
    """(cumulative sampled tokens, training figure) after each RL iteration of a run: dense,
    unlike the held-out curve (every eval_every iterations)."""
    x, y = curve(run["records"], "rl", key)
    it, cum = sampled_tokens(run["records"])
    at = dict(zip(it.tolist(), cum.tolist()))
    return np.array([at[int(i) + 1] for i in x]), y


def plot_arms(arms, names, bands, path: Path, title: str, by_tokens: bool = False):
    """Held-out accuracy and tokens of `bands` over RL (mean, min-max band per arm)."""
    ncol = 2 * len(bands) + (1 if by_tokens else 0)
    fig, axes = plt.subplots(1, ncol, figsize=(4.2 * ncol, 3.6))
    for name in names:
        runs = arms.get(name)
        if not runs:
            continue
        for j, band in enumerate(bands):
            for k, (what, label) in enumerate((("acc", "accuracy"), ("len", "tokens"))):
                ax = axes[2 * j + k]
                x, m, lo, hi = group_curves(runs, "eval", f"eval/{what}/{band}")
                ax.plot(x, m, marker="o", ms=3, label=f"{ARMS[name]} (n={len(runs)})")
                ax.fill_between(x, lo, hi, alpha=0.15)
                ax.set(xlabel="RL iteration", title=f"held-out {label}, {band}")
        if by_tokens:
            ax = axes[-1]
            for i, r in enumerate(runs):
                x, y = train_vs_tokens(r, f"train/acc/{bands[-1]}")
                ax.plot(
                    x / 1e3,
                    y,
                    color=f"C{names.index(name)}",
                    alpha=0.7,
                    label=ARMS[name] if i == 0 else None,
                )
            ax.set(
                xlabel="sampled tokens (thousands)",
                title=f"sampled accuracy, {bands[-1]}, per seed",
            )
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_fig5(runs, bands, path: Path):
    """The main job per seed: accuracy and tokens of each band, and training length."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for j, band in enumerate(bands):
        for ax, what in zip(axes[:2], ("acc", "len")):
            x, m, lo, hi = group_curves(runs, "eval", f"eval/{what}/{band}")
            ax.plot(x, m, marker="o", ms=3, color=f"C{j}", label=band)
            ax.fill_between(x, lo, hi, color=f"C{j}", alpha=0.15)
    for key, label in (("train/response_len_p50", "median"), ("train/response_len_p90", "p90")):
        x, m, lo, hi = group_curves(runs, "rl", key)
        axes[2].plot(x, m, label=label)
        axes[2].fill_between(x, lo, hi, alpha=0.15)
    axes[0].set(xlabel="RL iteration", title="held-out greedy accuracy", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="RL iteration", title="held-out mean response tokens")
    axes[2].set(xlabel="RL iteration", title="training response tokens")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"main job, {len(runs)} seeds: mean and min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def long2short_section(runs: Path, img: Path, hard: list[str]) -> list[str]:
    """Per method: accuracy and tokens on the hard bands and on all, mean over seeds."""
    files = sorted(runs.glob("long2short-seed*/long2short/results.json"))
    if not files:
        return ["(no long2short runs found)"]
    results = [json.loads(f.read_text()) for f in files]
    methods = list(results[0])
    lines = [
        f"{len(files)} seeds. Hard bands: {', '.join(hard)} (their mean). Per seed in brackets.",
        "",
        "| method | hard accuracy | hard tokens | tokens vs long | all-band accuracy | "
        "all-band tokens |",
        "|---|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, m in enumerate(methods):
        acc = [np.mean([r[m]["accuracy"][b] for b in hard]) for r in results]
        tok = [np.mean([r[m]["tokens"][b] for b in hard]) for r in results]
        long_tok = [np.mean([r["long"]["tokens"][b] for b in hard]) for r in results]
        rel = [t / lt - 1 for t, lt in zip(tok, long_tok)]
        all_acc = [np.mean(list(r[m]["accuracy"].values())) for r in results]
        all_tok = [np.mean(list(r[m]["tokens"].values())) for r in results]
        lines.append(
            f"| {m} | {spread(acc)} | {tokens_spread(tok)} | "
            f"{np.mean(rel):+.0%} ({', '.join(f'{x:+.0%}' for x in rel)}) | "
            f"{spread(all_acc)} | {tokens_spread(all_tok)} |"
        )
        ax.scatter(tok, acc, color=f"C{i}", alpha=0.4, s=14)
        ax.scatter([np.mean(tok)], [np.mean(acc)], color=f"C{i}", s=60, label=m)
    ax.set(
        xlabel=f"mean response tokens ({', '.join(hard)})",
        ylabel="held-out accuracy",
        title="long2short (Fig. 7): mean (large) and per seed (small)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "ablation-long2short.png", dpi=100)
    plt.close(fig)
    return lines


def write_plots(arms: dict, bands: list[str], img: Path) -> None:
    """The figures of the five comparisons (long2short's is drawn with its table)."""
    main_runs, hard = arms["curriculum"], bands[-2:]
    plot_fig5(main_runs, bands, img / "ablation-fig5.png")
    plot_arms(
        arms,
        ["curriculum", "uniform"],
        hard,
        img / "ablation-sampling.png",
        "curriculum vs uniform (Fig. 9)",
    )
    plot_arms(
        arms,
        ["curriculum", "rest"],
        hard,
        img / "ablation-rest.png",
        "mirror descent vs ReST (Fig. 10)",
        by_tokens=True,
    )
    plot_arms(
        arms,
        ["curriculum", "length_penalty"],
        hard,
        img / "ablation-length.png",
        "length penalty vs none",
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args(argv)
    img = args.out / "img"
    img.mkdir(parents=True, exist_ok=True)
    arms = load_arms(args.runs)
    main_runs = arms["curriculum"]
    bands = list(main_runs[0]["summary"]["eval_accuracy_by_band"]["end"])
    hard = bands[-2:]
    write_plots(arms, bands, img)
    walls = [r["summary"]["wall_time_s"] for r in main_runs]
    easy = bands[:-2]

    def section(title, image, names):
        return [
            f"## {title}",
            "",
            f"![{title}](img/{image})",
            "",
            *band_table(arms, names, hard),
            "",
            *worst_other(arms, names, easy),
            "",
        ]

    out = [
        "# Ablation results (generated by experiments/report_ablations.py)",
        "",
        "Mean over seeds, the seeds' own values in brackets. Held-out greedy decoding, 100",
        "prompts per band; tokens are mean response tokens (EOS included).",
        "",
        "## The main job per seed (Fig. 5)",
        "",
        f"Wall time per seed: {', '.join(f'{w / 60:.1f} min' for w in walls)}.",
        "",
        "![main job](img/ablation-fig5.png)",
        "",
        *band_table(arms, ["curriculum"], bands),
        "",
        *section(
            "Curriculum vs uniform (Fig. 9)", "ablation-sampling.png", ["curriculum", "uniform"]
        ),
        *early_table(arms, ["curriculum", "uniform"], bands[-1]),
        "",
        *section("Mirror descent vs ReST (Fig. 10)", "ablation-rest.png", ["curriculum", "rest"]),
        *early_table(arms, ["curriculum", "rest"], bands[-1]),
        "",
        *section(
            "Length penalty vs none (sec. 2.3.3)",
            "ablation-length.png",
            ["curriculum", "length_penalty"],
        ),
        "## skip_zero_advantage off (seed 0 only)",
        "",
        *band_table(arms, ["curriculum", "keep_zero_adv"], hard),
        "",
        *early_table(arms, ["curriculum", "keep_zero_adv"], bands[-1]),
        "",
        "## long2short (Fig. 7)",
        "",
        "![long2short](img/ablation-long2short.png)",
        "",
        *long2short_section(args.runs, img, hard),
    ]
    (args.out / "ablations-results.md").write_text("\n".join(out) + "\n")
    print(args.out / "ablations-results.md")


if __name__ == "__main__":
    main()
