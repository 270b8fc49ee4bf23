"""The embedded default task suite: multi-digit arithmetic with worked digit-by-digit steps.

Built for a ~0.5-5M-parameter character-level decoder on a CPU: short ASCII text, one
fixed-width line per digit (so the chain of thought grows linearly with the band), a
final `\\boxed{answer}` that `math_reward` verifies. A band is "<family><n>":

  add<n>: two n-digit numbers.   prompt "472+389"   steps, least significant digit first:
          2+9+0=11                (digit of a + digit of b + carry in = two-digit sum;
          7+8+1=16                 its tens digit is the next line's carry)
          4+3+1=08
          \\boxed{861}
  mul<n>: n-digit times one digit 2..9. prompt "472*6"; lines "2*6+0=12", "7*6+1=43",
          "4*6+4=28", then \\boxed{2832}.

Sizes: add5 is an 11-char prompt and a 58-char solution (add1: 3 and 19). Everything is
generated on the fly and deterministically from seeds. The held-out evaluation split is
a hash of the prompt text (independent of any seed), so no training draw, pool or seed
ever yields an evaluation prompt. Note the small bands: add1 has 100 problems, of which
only ~eval_fraction are held out, so `eval_tasks("add1")` is shorter than eval_per_band.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from k15_jax.data.loaders import Task
from k15_jax.data.long_cot import LongCotConfig, long_cot_demonstration

STYLES = ("worked", "long_cot")
_ENUMERATE_BELOW = 50_000  # problem spaces up to this size are enumerated, larger ones sampled


@dataclasses.dataclass
class SyntheticConfig:
    """The synthetic suite: which bands, their mix in SFT and RL, seeds, eval split sizes."""

    bands: list[str] = dataclasses.field(default_factory=lambda: [f"add{n}" for n in range(1, 6)])
    # Relative SFT mix per band; the hardest band is kept rare so that RL has room to
    # improve there (a 0.4M-param prototype started RL at ~9% on add5 with ~5% of SFT data).
    sft_band_weights: list[float] = dataclasses.field(
        default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 0.2]
    )
    rl_band_weights: list[float] | None = None  # None: uniform over bands
    seed: int = 0  # training draws and pools
    eval_seed: int = 0  # which held-out problems form each band's eval list
    eval_fraction: float = 0.1  # share of each band's problem space held out
    eval_per_band: int = 200
    pool_per_band: int = 1000  # size of the fixed training pool (RL samplers, curation)
    # SFT demonstrations: "worked" (every one the worked digit lines) or "long_cot" (a mix
    # of direct answers, worked lines, checked and corrected passes: k15_jax/data/long_cot.py)
    style: str = "worked"
    long_cot: LongCotConfig = dataclasses.field(default_factory=LongCotConfig)


@dataclasses.dataclass(frozen=True)
class _Family:
    domain: str
    symbol: str
    b_range: Callable[[int], tuple[int, int]]  # n -> inclusive range of the second operand
    step: Callable[[int, int, int], tuple[str, int]]  # (digit, other, carry) -> (line, sum)
    apply: Callable[[int, int], int]


def n_digit_range(n: int) -> tuple[int, int]:
    return (0, 9) if n == 1 else (10 ** (n - 1), 10**n - 1)


def _add_step(da: int, db: int, carry: int) -> tuple[str, int]:
    s = da + db + carry
    return f"{da}+{db}+{carry}={s:02d}", s


def _mul_step(da: int, m: int, carry: int) -> tuple[str, int]:
    s = da * m + carry
    return f"{da}*{m}+{carry}={s:02d}", s


FAMILIES = {
    "add": _Family("addition", "+", n_digit_range, _add_step, lambda a, b: a + b),
    "mul": _Family("multiplication", "*", lambda n: (2, 9), _mul_step, lambda a, b: a * b),
}


def parse_band(band: str) -> tuple[str, int]:
    """'add5' -> ('add', 5); raises ValueError naming the config field otherwise."""
    m = re.fullmatch(r"([a-z]+)(\d+)", band)
    if not m or m.group(1) not in FAMILIES or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(
            f"unknown synthetic band {band!r} in SyntheticConfig.bands; use <family><n> with "
            f"family in {sorted(FAMILIES)} and n in 1..12, e.g. 'add3'"
        )
    return m.group(1), int(m.group(2))


def worked_solution(family: str, a: int, b: int, n: int) -> str:
    """The demonstration: one line per digit of `a` (least significant first), then the box.

    Each line combines that digit with b's digit at the same place (`add`) or with the
    whole one-digit b (`mul`), plus the carry: the tens digit of the previous line.
    """
    fam = FAMILIES[family]
    lines, carry = [], 0
    for i in range(n):
        da = a // 10**i % 10
        other = b // 10**i % 10 if family == "add" else b
        line, s = fam.step(da, other, carry)
        lines.append(line)
        carry = s // 10
    lines.append(f"\\boxed{{{fam.apply(a, b)}}}")
    return "\n".join(lines)


def make_task(band: str, a: int, b: int) -> Task:
    """The task for one problem of a band (prompt "a+b"; id "<band>/<prompt>")."""
    family, n = parse_band(band)
    fam = FAMILIES[family]
    prompt = f"{a}{fam.symbol}{b}"
    return Task(
        id=f"{band}/{prompt}",
        prompt=prompt,
        reference=str(fam.apply(a, b)),
        band=band,
        domain=fam.domain,
        solution=worked_solution(family, a, b, n),
        meta={"source": "synthetic", "family": family, "n_digits": n, "operands": [a, b]},
    )


def demonstration(task: Task) -> str:
    """Worked chain of thought ending in \\boxed{answer}, rebuilt from the task's operands."""
    a, b = task.meta["operands"]
    return worked_solution(task.meta["family"], a, b, task.meta["n_digits"])


def is_eval_prompt(prompt: str, eval_fraction: float) -> bool:
    """Held-out split: a stable 64-bit hash of the prompt text below the fraction."""
    h = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "little")
    return h < eval_fraction * 2**64


def stable_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


def _band_space(band: str) -> tuple[int, int, int, int]:
    """(lo_a, n_a, lo_b, n_b): problem k is (lo_a + k // n_b, lo_b + k % n_b)."""
    family, n = parse_band(band)
    lo_a, hi_a = n_digit_range(n)
    lo_b, hi_b = FAMILIES[family].b_range(n)
    return lo_a, hi_a - lo_a + 1, lo_b, hi_b - lo_b + 1


def _task_at(band: str, k: int) -> Task:
    lo_a, _, lo_b, n_b = _band_space(band)
    return make_task(band, lo_a + k // n_b, lo_b + k % n_b)


def _draw_unique(band: str, count: int, rng: np.random.Generator, want_eval: bool, frac: float):
    """Up to `count` distinct tasks of one side of the split, in a seeded random order."""
    _, n_a, _, n_b = _band_space(band)
    size = n_a * n_b

    def indices():  # distinct candidates, drawn batch by batch as the loop below asks
        if size <= _ENUMERATE_BELOW:
            yield from (int(k) for k in rng.permutation(size))
            return
        if count < 1:
            return
        seen = set()
        while True:
            for k in rng.integers(0, size, size=4 * count):
                if int(k) not in seen:
                    seen.add(int(k))
                    yield int(k)

    out = []
    for k in indices():
        t = _task_at(band, k)
        if is_eval_prompt(t.prompt, frac) == want_eval:
            out.append(t)
            if len(out) == count:
                break
    return out


def _normalized(weights: Sequence[float] | None, bands: Sequence[str], key: str) -> np.ndarray:
    if weights is None:
        return np.full(len(bands), 1.0 / len(bands))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(bands),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"SyntheticConfig.{key} = {list(weights)} must give one non-negative weight per "
            f"band ({len(bands)} bands: {list(bands)}), not all zero"
        )
    return w / w.sum()


class SyntheticSuite:
    """Bands, held-out eval lists, training draws and pools of the synthetic task suite."""

    def __init__(self, cfg: SyntheticConfig | None = None):
        self.cfg = cfg or SyntheticConfig()
        if not self.cfg.bands:
            raise ValueError("SyntheticConfig.bands is empty; list bands such as ['add1', 'add2']")
        for band in self.cfg.bands:
            parse_band(band)
        if self.cfg.style not in STYLES:
            raise ValueError(
                f"SyntheticConfig.style={self.cfg.style!r}; choose one of {STYLES} "
                "(data.synthetic.style)"
            )
        if not 0.0 < self.cfg.eval_fraction < 1.0:
            raise ValueError("SyntheticConfig.eval_fraction must lie strictly between 0 and 1")
        self.sft_weights = _normalized(self.cfg.sft_band_weights, self.bands, "sft_band_weights")
        self.rl_weights = _normalized(self.cfg.rl_band_weights, self.bands, "rl_band_weights")
        self._eval: dict[str, list[Task]] = {}
        self._pool: dict[str, list[Task]] = {}

    @property
    def bands(self) -> list[str]:
        return list(self.cfg.bands)

    def eval_tasks(self, band: str) -> list[Task]:
        """The band's held-out problems: fixed by eval_seed, never drawn for training."""
        if band not in self._eval:
            rng = np.random.default_rng([self.cfg.eval_seed, stable_int(band), 0])
            frac = self.cfg.eval_fraction
            self._eval[band] = _draw_unique(band, self.cfg.eval_per_band, rng, True, frac)
        return list(self._eval[band])

    def train_pool(self, bands: Sequence[str] | None = None) -> list[Task]:
        """A fixed set of pool_per_band distinct training tasks per band (seeded by `seed`).

        Stable ids for samplers that keep per-prompt state, and the prompt set to curate.
        """
        out = []
        for band in bands or self.bands:
            if band not in self._pool:
                rng = np.random.default_rng([self.cfg.seed, stable_int(band), 1])
                frac = self.cfg.eval_fraction
                self._pool[band] = _draw_unique(band, self.cfg.pool_per_band, rng, False, frac)
            out.extend(self._pool[band])
        return out

    def train_tasks(
        self, n: int, rng: np.random.Generator, weights: Sequence[float] | None = None
    ) -> list[Task]:
        """n fresh training draws (repeats possible): band by weight (default rl weights),
        then a uniform problem of that band outside the eval split."""
        p = self.rl_weights if weights is None else _normalized(weights, self.bands, "weights")
        out = []
        for b in rng.choice(len(self.bands), size=n, p=p):
            band = self.bands[int(b)]
            _, n_a, _, n_b = _band_space(band)
            while True:
                t = _task_at(band, int(rng.integers(0, n_a * n_b)))
                if not is_eval_prompt(t.prompt, self.cfg.eval_fraction):
                    out.append(t)
                    break
        return out

    def sft_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """n training draws in the SFT band mix (sft_band_weights); pair with demonstration."""
        return self.train_tasks(n, rng, weights=self.sft_weights)

    def demonstration(self, task: Task, rng: np.random.Generator | None = None) -> str:
        """The SFT response for a task in the configured style; rng draws the long_cot form
        (default: one seeded by the task id, so the same task gets the same form)."""
        if self.cfg.style == "worked":
            return demonstration(task)
        rng = rng if rng is not None else np.random.default_rng(stable_int(task.id))
        return long_cot_demonstration(task, self.cfg.long_cot, rng)
