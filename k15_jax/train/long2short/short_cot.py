"""Short-CoT demonstrations for the synthetic suite: the short model that long2short merges
with the long-CoT one (report sec. 2.4, model merging).

The long format writes one worked line per digit ("2+9+0=11"); a short format drops some or
all of it. Each format is a function Task -> response text ending in \\boxed{answer}:

  answer   "\\boxed{861}": no reasoning at all (11 tokens on add3 instead of 38)
  sums     "11\\n16\\n08\\n\\boxed{861}": only each line's two-digit sum, the operands and
           carries left implicit (about a third of the long lines)
"""

import numpy as np

from k15_jax.data.synthetic import demonstration
from k15_jax.data.templates import render


def _answer(task) -> str:
    return f"\\boxed{{{task.reference}}}"


def _sums(task) -> str:
    *steps, box = demonstration(task).split("\n")
    return "\n".join([line.split("=", 1)[1] for line in steps] + [box])


def _nocarry(task) -> str:
    *steps, box = demonstration(task).split("\n")
    out = []
    for line in steps:  # "2+9+0=11" -> "29=11"
        lhs, rhs = line.split("=", 1)
        out.append("".join(lhs.replace("*", "+").split("+")[:2]) + "=" + rhs)
    return "\n".join(out + [box])


SHORT_FORMATS = {"answer": _answer, "sums": _sums, "nocarry": _nocarry}


def short_format(name: str):
    if name not in SHORT_FORMATS:
        raise ValueError(
            f"long2short.short.format={name!r} is unknown; choose from {sorted(SHORT_FORMATS)}"
        )
    return SHORT_FORMATS[name]


def short_examples(setup, fmt: str, seed: int):
    """examples(step) -> [(prompt ids, short response ids)]: fresh SFT draws per step, in the
    main SFT band mix, enough to fill the packed rows (deterministic in seed and step)."""
    write = short_format(fmt)
    c = setup.cfg.long2short.short.sft
    tok = setup.tokenizer

    def examples(step: int):
        rng = np.random.default_rng([seed, 21, step])
        tasks = setup.suite.sft_tasks(c.rows * max(1, c.row_len // 16), rng)
        return [
            (tok.encode(render(setup.template, t.prompt), bos=True), tok.encode(write(t), eos=True))
            for t in tasks
        ]

    return examples
