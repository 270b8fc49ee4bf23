"""Re-scores the held-out start and end accuracy of the loss comparison's runs in one process.

    python -m experiments.losses_reeval --runs runs/losses [--timeout 60]

Why: the loop scores held-out answers with the verifier's 5 s wall-clock limit per check. On
a machine loaded far past its cores (the comparison ran at load 12-20 on 2 cores), checks
ran out of time and were scored wrong: arms of one seed, which start from the same SFT
params, logged different start accuracies (e.g. add1 100% vs 92%). This script decodes the
same held-out prompts greedily with the same engine settings from each run's final params
(`final/hf`) and from each seed's SFT params (the start), scores them with a generous limit,
and writes <runs>/reeval.json: {run name: {band: accuracy}}, start under "sft-seed<s>".
`experiments.losses_report` then uses these figures for the start and end columns.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from k15_jax.config import register
from k15_jax.eval.heldout import heldout
from k15_jax.model.hf import load_hf
from k15_jax.rewards.math import score_math
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.texts import request_rows, response_texts
from k15_jax.train.setup import build

ROOT = Path(__file__).resolve().parents[1]


def accuracy(engine, s, items, timeout_s: float) -> dict:
    """Greedy held-out accuracy per band of the params held by `engine`."""
    import jax

    ids = [f"eval{i}" for i in range(len(items))]
    prompts = [s.tokenizer.encode(p, bos=True) for p, _, _ in items]
    ro, group_ids, _, _ = driver.collect(
        engine, list(zip(ids, prompts)), k=1, iteration=0, key=jax.random.key(0),
        buffer=RolloutBuffer(),
    )  # fmt: skip
    rows = request_rows(group_ids, ids, 1)
    texts = response_texts(ro, rows, s.tokenizer, s.template)
    correct, stats = score_math(texts, [r for _, r, _ in items], timeout_s=timeout_s)
    bands = np.array([b for _, _, b in items])
    acc = {b: float(np.asarray(correct)[bands == b].mean()) for b in s.suite.bands}
    return acc, int(stats.get("timeouts", 0))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/losses"))
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("config", overrides=["+exp=curriculum", f"trainer.run_dir={args.runs}"])
    s = build(cfg)
    items = heldout(s, cfg.trainer.eval_per_band)
    engine = s.engine(greedy=True, partial=False)
    score_math(["\\boxed{1}"], ["1"], timeout_s=args.timeout)  # warm the verifier's imports
    out_file = args.runs / "reeval.json"
    out = json.loads(out_file.read_text()) if out_file.exists() else {}
    dirs = sorted(d for d in args.runs.iterdir() if (d / "summary.json").is_file())
    for d in dirs:
        if d.name in out:
            continue
        _, params = load_hf(d / "final" / "hf")
        engine.params = params
        acc, timeouts = accuracy(engine, s, items, args.timeout)
        out[d.name] = acc
        print(d.name, json.dumps(acc), f"timeouts={timeouts}", flush=True)
        out_file.write_text(json.dumps(out, indent=1))
    print(out_file)


if __name__ == "__main__":
    main()
