"""Model merging for long2short (report sec. 2.4): write the weighted average of two HF
checkpoints of one architecture.

    python -m experiments.merge LONG_DIR SHORT_DIR OUT_DIR [--alpha 0.5]

OUT = alpha * LONG + (1 - alpha) * SHORT, tensor by tensor; config and tokenizer files are
copied from LONG_DIR.
"""

import argparse
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("long", type=Path, help="HF checkpoint directory of the long-CoT model")
    ap.add_argument("short", type=Path, help="HF checkpoint directory of the short-CoT model")
    ap.add_argument("out", type=Path, help="directory to write the merged checkpoint to")
    ap.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="weight of the long model (default 0.5: the plain average)",
    )
    args = ap.parse_args(argv)
    from k15_jax.train.long2short.merge import merge_checkpoints

    print(merge_checkpoints(args.long, args.short, args.out, args.alpha), flush=True)


if __name__ == "__main__":
    main()
