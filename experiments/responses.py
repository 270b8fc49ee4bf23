"""Read a finished run's held-out greedy responses: per band, accuracy, mean tokens, the share
of each long-CoT form (direct / worked / checked / corrected), and a few responses.

    python -m experiments.responses runs/curriculum-seed0 [--per-band 100] [--show 2]

Uses the run's config.yaml and its exported policy (final/hf). Prints a table, then one
JSON object as the last line.
"""

import argparse
import collections
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from k15_jax.config import Config
from k15_jax.data.long_cot import FORMS, form_of
from k15_jax.eval.checkpoint import run_config
from k15_jax.eval.heldout import decode, heldout
from k15_jax.model.hf import load_hf
from k15_jax.rewards.math import score_math
from k15_jax.train.setup import build


def greedy_texts(s, params, per_band: int):
    """[(band, response text, correct, tokens)] of the held-out split, greedy."""
    items = heldout(s, per_band)
    prompts = [s.tokenizer.encode(p, bos=True) for p, _, _ in items]
    texts, lens = decode(s.engine(params, greedy=True, partial=False), s, prompts)
    correct, _ = score_math(texts, [r for _, r, _ in items])
    return [(b, t, c, n) for (_, _, b), t, c, n in zip(items, texts, correct, lens)]


def band_table(rows) -> dict:
    """{band: {accuracy, mean_tokens, forms: {form: share}}}."""
    out = {}
    for band in dict.fromkeys(r[0] for r in rows):
        sel = [r for r in rows if r[0] == band]
        forms = collections.Counter(form_of(t) for _, t, _, _ in sel)
        out[band] = {
            "accuracy": float(np.mean([c for _, _, c, _ in sel])),
            "mean_tokens": float(np.mean([n for _, _, _, n in sel])),
            "forms": {f: forms[f] / len(sel) for f in FORMS},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--per-band", type=int, default=100)
    ap.add_argument("--show", type=int, default=2, help="responses printed per band")
    args = ap.parse_args()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), run_config(args.run_dir))
    cfg.trainer.run_dir = str(args.run_dir / "responses")
    s = build(cfg)
    _, params = load_hf(args.run_dir / "final" / "hf", shardings=s.train_shardings)
    rows = greedy_texts(s, params, args.per_band)
    table = band_table(rows)
    for band, r in table.items():
        forms = " ".join(f"{f}={v:.0%}" for f, v in r["forms"].items())
        print(f"{band}: acc {r['accuracy']:.1%}  tokens {r['mean_tokens']:.1f}  {forms}")
        for _, text, c, _ in [x for x in rows if x[0] == band][: args.show]:
            print(f"  [{'ok' if c else 'wrong'}] " + text.replace("\n", " | "))
    print(json.dumps(table))


if __name__ == "__main__":
    main()
