"""Training curves as PNG, from metrics.jsonl (like the report's Fig. 5)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(records, key, phase="rl"):
    pts = [(r["iteration"], r[key]) for r in records if r.get("phase") == phase and key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(records: list[dict], out_dir: Path) -> list[Path]:
    """Writes training_reward.png, heldout_accuracy.png, response_length.png."""
    out_dir = Path(out_dir)
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train/reward_mean", "reward"), ("train/accuracy", "sampled accuracy")):
        x, y = _series(records, key)
        ax.plot(x, y, label=label)
    ax.set(xlabel="RL iteration", ylabel="training reward", title="Training reward")
    ax.legend()
    paths.append(_save(fig, out_dir / "training_reward.png"))

    evals = [r for r in records if r.get("phase") == "eval"]
    bands = sorted({k.split("/", 2)[2] for r in evals for k in r if k.startswith("eval/acc/")})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for band in bands:
        x = [r["iteration"] for r in evals]
        axes[0].plot(x, [r[f"eval/acc/{band}"] for r in evals], marker="o", label=band)
        axes[1].plot(x, [r[f"eval/len/{band}"] for r in evals], marker="o", label=band)
    axes[0].set(
        xlabel="RL iteration",
        ylabel="held-out accuracy",
        ylim=(-0.02, 1.02),
        title="Held-out accuracy per band",
    )
    axes[1].set(
        xlabel="RL iteration", ylabel="mean response tokens", title="Response length per band"
    )
    axes[0].legend(fontsize=8)
    paths.append(_save(fig, out_dir / "heldout_accuracy.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("train/response_len", "mean"),
        ("train/response_len_p50", "median"),
        ("train/response_len_p90", "90th percentile"),
    ):
        x, y = _series(records, key)
        if y:
            ax.plot(x, y, label=label)
    ax.set(xlabel="RL iteration", ylabel="response tokens", title="Training response length")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "response_length.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
