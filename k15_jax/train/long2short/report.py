"""The long2short comparison (like the report's Fig. 7): held-out accuracy against mean
response tokens per method, as a plot, a markdown table and a printed table."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

LABELS = {
    "long": "long-CoT",
    "short": "short-CoT (SFT)",
    "merge": "merge",
    "merge_rs": "merge + shortest RS",
    "dpo": "DPO",
    "rl": "long2short RL",
}


def rows(results: dict) -> list[dict]:
    """One row per method: accuracy and tokens averaged over bands (each band counts the
    same), the hardest band's, and accuracy per 100 tokens."""
    out = []
    for name, r in results.items():
        bands = list(r["accuracy"])
        acc = sum(r["accuracy"].values()) / len(bands)
        tokens = sum(r["tokens"].values()) / len(bands)
        out.append(
            {
                "method": name,
                "label": LABELS.get(name, name),
                "accuracy": acc,
                "tokens": tokens,
                "acc_per_100_tokens": 100 * acc / max(tokens, 1e-9),
                "hard_band": bands[-1],
                "hard_accuracy": r["accuracy"][bands[-1]],
                "hard_tokens": r["tokens"][bands[-1]],
            }
        )
    return out


def markdown(table: list[dict], title: str) -> str:
    hard = table[0]["hard_band"] if table else "hardest"
    lines = [
        f"# {title}",
        "",
        f"| method | accuracy (mean over bands) | mean response tokens | accuracy per 100 tokens "
        f"| {hard} accuracy | {hard} tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['label']} | {r['accuracy']:.1%} | {r['tokens']:.1f} | "
            f"{r['acc_per_100_tokens']:.2f} | {r['hard_accuracy']:.1%} | {r['hard_tokens']:.1f} |"
        )
    return "\n".join(lines) + "\n"


MARKERS = "osDv^P*X"


def plot(table: list[dict], path: Path) -> Path:
    """Two panels: mean over bands, and the hardest band; x tokens, y accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    panels = (
        ("tokens", "accuracy", "all bands (mean)"),
        ("hard_tokens", "hard_accuracy", f"{table[0]['hard_band']} (hardest band)"),
    )
    for ax, (x, y, title) in zip(axes, panels, strict=True):
        for i, r in enumerate(table):  # distinct markers: coinciding points stay visible
            ax.scatter(
                r[x],
                r[y],
                s=70,
                color=f"C{i}",
                marker=MARKERS[i % len(MARKERS)],
                label=r["label"],
                zorder=3,
                alpha=0.8,
            )
        ax.set(
            xlabel="mean response tokens (held-out, greedy)",
            ylabel="held-out accuracy",
            title=title,
            ylim=(-0.03, 1.05),
        )
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle("long2short: accuracy vs response length (cf. k1.5 Fig. 7)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_table(table: list[dict], title: str) -> None:
    t = Table(title=title)
    for col in (
        "method",
        "accuracy",
        "tokens",
        "acc/100 tok",
        f"{table[0]['hard_band']} acc",
        f"{table[0]['hard_band']} tok",
    ):
        t.add_column(col, justify="right")
    for r in table:
        t.add_row(
            r["label"],
            f"{r['accuracy']:.1%}",
            f"{r['tokens']:.1f}",
            f"{r['acc_per_100_tokens']:.2f}",
            f"{r['hard_accuracy']:.1%}",
            f"{r['hard_tokens']:.1f}",
        )
    Console(stderr=True).print(t)


def write_report(results: dict, out_dir: Path, title: str) -> list[dict]:
    """long2short.png, long2short.md in out_dir; prints the table. Returns the rows."""
    table = rows(results)
    (Path(out_dir) / "long2short.md").write_text(markdown(table, title))
    plot(table, Path(out_dir) / "long2short.png")
    print_table(table, title)
    return table
