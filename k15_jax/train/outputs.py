"""What a finished run leaves behind: summary, plots, held-out set, HF export, a table."""

import json

from rich.console import Console
from rich.table import Table

from k15_jax.model.hf import export_hf
from k15_jax.train.plots import plot_run


def summary(setup, state) -> dict:
    bands = setup.prompts.bands
    return {
        "experiment": setup.cfg.trainer.name,
        "seed": setup.cfg.trainer.seed,
        "wall_time_s": round(float(state.extra.get("wall_time_s", 0.0)), 1),
        "hardest_band": bands[-1],
        "iterations": state.iteration,
        "sft_steps": state.sft_step,
        "eval_accuracy_by_band": {
            "start": state.extra.get("eval_start", {}),
            "end": state.extra.get("eval_end", {}),
        },
        # mean tokens of the greedy held-out responses (the report's Fig. 5 length)
        "eval_length_by_band": {
            "start": state.extra.get("eval_start_len", {}),
            "end": state.extra.get("eval_end_len", {}),
        },
    }


def export_policy(setup, params, hf_dir) -> None:
    """A transformers-loadable policy and its tokenizer in hf_dir (host params)."""
    export_hf(params, setup.model, hf_dir)
    setup.tokenizer.save_hf(hf_dir)


def write_outputs(setup, params, state, writer) -> dict:
    """final/hf (policy + tokenizer), eval/heldout.jsonl, plots and summary.json."""
    run = setup.run_dir
    export_policy(setup, params, run / "final" / "hf")
    (run / "eval").mkdir(exist_ok=True)
    with (run / "eval" / "heldout.jsonl").open("w") as f:
        for row in setup.prompts.heldout_rows(setup.cfg.trainer.eval_per_band):
            f.write(json.dumps(row) + "\n")
    records = writer.records()
    plot_run(records, run)
    out = summary(setup, state)
    setup.prompts.write_outputs(params, setup, records, out)
    (run / "summary.json").write_text(json.dumps(out, indent=2))
    print_table(out)
    return out


def print_table(out: dict) -> None:
    start, end = out["eval_accuracy_by_band"]["start"], out["eval_accuracy_by_band"]["end"]
    len0, len1 = out["eval_length_by_band"]["start"], out["eval_length_by_band"]["end"]
    title = f"{out['experiment']} (seed {out['seed']}): held-out greedy accuracy and tokens"
    table = Table(title=title)
    for col in ("band", "start", "end", "change", "tokens start", "tokens end"):
        table.add_column(col, justify="right")
    nan = float("nan")
    for band in end:
        a, b = start.get(band, nan), end[band]
        n0, n1 = len0.get(band, nan), len1.get(band, nan)
        table.add_row(
            band, f"{a:.1%}", f"{b:.1%}", f"{(b - a) * 100:+.1f} pts", f"{n0:.1f}", f"{n1:.1f}"
        )
    Console(stderr=True).print(table)
    Console(stderr=True).print(f"wall time {out['wall_time_s']:.0f} s")
