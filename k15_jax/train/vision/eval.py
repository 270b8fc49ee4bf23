"""Held-out evaluation of a vision run: accuracy per band, per modality, and text vs image
on the text-rendered problems; the summary entries and the per-modality plot."""

from pathlib import Path

import numpy as np

from k15_jax.data.visual import parse_visual_band
from k15_jax.eval.heldout import decode_and_score
from k15_jax.train.vision.data import modality


def evaluate_vision(engine, setup, per_band: int) -> dict[str, tuple[float, float]]:
    """{key: (accuracy, mean response tokens)} for keys: each band; "modality/text" and
    "modality/image"; "agree/imgadd<n>" (share of add<n> problems solved in both
    modalities or in neither; its second value is the text accuracy on those problems)."""
    vd, tok = setup.prompts.data, setup.tokenizer
    limit = engine.cfg.max_prompt_len
    items, too_long = [], 0
    for task, band in vd.eval_items(per_band, setup.suite.bands):
        ids = vd.prompt_ids(tok, setup.template, task)
        if len(ids) > limit:  # e.g. a long MathVista question
            too_long += 1
            continue
        items.append((task, band, ids))
    images = {
        f"eval{i}": vd.images(t) for i, (t, _, _) in enumerate(items) if modality(t) == "image"
    }
    correct, lens = decode_and_score(
        engine, setup, [ids for _, _, ids in items], [t.reference for t, _, _ in items], images
    )
    bands = np.array([b for _, b, _ in items])
    mods = np.array([modality(t) for t, _, _ in items])
    out = {
        b: (float(correct[bands == b].mean()), float(lens[bands == b].mean()))
        for b in dict.fromkeys(bands)
    }
    for m in ("text", "image"):
        if (mods == m).any():
            out[f"modality/{m}"] = (float(correct[mods == m].mean()), float(lens[mods == m].mean()))
    by_problem = {}  # (band pair, prompt) -> {modality: correct}
    for (t, b, _), c in zip(items, correct):
        if b.startswith("imgadd") or (b.startswith("add") and "operands" in t.meta):
            key = (t.meta["n_digits"], "{}+{}".format(*t.meta["operands"]))
            by_problem.setdefault(key, {})[modality(t)] = c
    for band in vd.suite.bands:
        kind, n = parse_visual_band(band)
        pairs = [p for (nd, _), p in by_problem.items() if nd == n and len(p) == 2]
        if kind == "imgadd" and pairs:
            agree = np.mean([p["text"] == p["image"] for p in pairs])
            out[f"agree/{band}"] = (float(agree), float(np.mean([p["text"] for p in pairs])))
    if too_long:
        out["skipped/too_long"] = (float(too_long), 0.0)
    return out


def vision_summary(setup, start: dict, end: dict) -> dict:
    """summary.json entries: accuracy per modality and text vs image, at start and end."""

    def modalities(r):
        return {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("modality/")}

    side = {}
    for band in setup.prompts.data.suite.bands:
        kind, n = parse_visual_band(band)
        if kind == "imgadd":
            side[band] = {
                when: {
                    "text": r.get(f"add{n}"),
                    "image": r.get(band),
                    "agree": r.get(f"agree/{band}"),
                }
                for when, r in (("start", start), ("end", end))
            }
    return {
        "eval_accuracy_by_modality": {"start": modalities(start), "end": modalities(end)},
        "text_vs_image": side,
        "mathvista": setup.prompts.data.mathvista_stats or None,
    }


def plot_modalities(records: list[dict], out_dir: Path) -> Path:
    """modality_accuracy.png: held-out accuracy per modality, text vs image per
    text-rendered band, and the sampled training accuracy per modality, over RL iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [r for r in records if r.get("phase") == "eval"]
    x = [r["iteration"] for r in evals]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    keys = sorted({k for r in evals for k in r if k.startswith("eval/acc/modality/")})
    colour = {"text": "tab:blue", "image": "tab:orange"}
    for k in keys:
        m = k.rsplit("/", 1)[1]
        axes[0].plot(x, [r.get(k, np.nan) for r in evals], marker="o", label=m, color=colour[m])
    axes[0].set(
        xlabel="RL iteration",
        ylabel="held-out accuracy",
        ylim=(-0.02, 1.02),
        title="Held-out accuracy per modality",
    )
    twins = sorted(
        {k.rsplit("/", 1)[1] for r in evals for k in r if k.startswith("eval/acc/agree/")}
    )
    for band in twins:
        text = f"eval/acc/add{band[6:]}"
        axes[1].plot(
            x, [r.get(text, np.nan) for r in evals], marker="o", label=f"add{band[6:]} text"
        )
        axes[1].plot(
            x, [r.get(f"eval/acc/{band}", np.nan) for r in evals], marker="s", label=f"{band} image"
        )
    axes[1].set(
        xlabel="RL iteration",
        ylabel="held-out accuracy",
        ylim=(-0.02, 1.02),
        title="Same problems: text vs image",
    )
    rl = [r for r in records if r.get("phase") == "rl"]
    for m in ("text", "image"):
        pts = [
            (r["iteration"], r[f"train/acc/modality/{m}"])
            for r in rl
            if f"train/acc/modality/{m}" in r
        ]
        if pts:
            axes[2].plot(*zip(*pts), label=m, color=colour[m])
    axes[2].set(
        xlabel="RL iteration",
        ylabel="sampled accuracy",
        ylim=(-0.02, 1.02),
        title="Training accuracy per modality",
    )
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / "modality_accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
