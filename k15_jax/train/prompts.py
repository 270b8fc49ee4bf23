"""Where a run's prompts come from: the one object the trainer asks for prompt ids, images,
SFT demonstrations, held-out evaluation and the held-out rows it writes.

`TextPrompts` serves the text-only suite. A vision run uses `train.vision.prompts.VisionPrompts`,
which adds image placeholders, image batches and per-modality metrics through the same
methods, so the loop has no vision branches.
"""

from pathlib import Path

import jax
import numpy as np

from k15_jax.data.demos import load_sft_rows
from k15_jax.data.sources import SourceConfig, load_source, mix, source_name
from k15_jax.data.templates import chat_prompt, kind_template, render
from k15_jax.eval.heldout import evaluate, heldout
from k15_jax.rewards.routing import code_cases, code_scorer, route_by_kind, task_kind
from k15_jax.rewards.score import RewardConfig, make_verifier
from k15_jax.rollout import driver
from k15_jax.rollout.buffer import RolloutBuffer
from k15_jax.rollout.texts import request_rows, response_texts
from k15_jax.train.metrics import log


def source_config(entry) -> SourceConfig:
    """A data.train / data.eval entry: a path string, or a mapping of SourceConfig fields."""
    if isinstance(entry, str):
        return SourceConfig(path=entry)
    return SourceConfig(**dict(entry))


class TextPrompts:
    """The synthetic suite's tasks, encoded with the run's template and tokenizer."""

    def __init__(self, suite, tokenizer, template):
        self.suite, self.tokenizer, self.template = suite, tokenizer, template
        self.pool = suite.train_pool()

    @property
    def bands(self) -> list[str]:
        """The held-out evaluation's groups, easiest first (the last is the hardest)."""
        return self.suite.bands

    @property
    def has_sft(self) -> bool:
        """Whether there are demonstrations for the SFT warm-up (else RL starts at once)."""
        return True

    def prompt_ids(self, task) -> list[int]:
        """Model input ids of a task (BOS first)."""
        return self.tokenizer.encode(render(self.template, task.prompt), bos=True)

    def images(self, task) -> np.ndarray | None:
        """Image patches [m, P, C] of the task's prompt; None for a text prompt."""
        del task
        return None

    def request_images(self, tasks_by_id: dict) -> dict | None:
        """{request id: patches} for the rollout driver; None when no prompt has images."""
        del tasks_by_id
        return None

    def loss_images(self, tasks: list, rows: int) -> np.ndarray | None:
        """Images [rows, M, P, C] of the loss batch's rows (as the rollout's prefill saw
        them); None for a text run."""
        del tasks, rows
        return None

    def sft_examples(self, n: int, rng) -> list[tuple]:
        """n (prompt ids, response ids) worked demonstrations for the SFT warm-up."""
        tok = self.tokenizer
        return [
            (self.prompt_ids(t), tok.encode(self.suite.demonstration(t, rng), eos=True))
            for t in self.suite.sft_tasks(n, rng)
        ]

    def sft_images(self, examples, placement, rows: int, row_len: int) -> np.ndarray | None:
        """Images of packed SFT rows [rows, M, P, C]; None for a text run."""
        del examples, placement, rows, row_len
        return None

    def train_metrics(self, tasks: list, correct: np.ndarray) -> dict:
        """Extra per-iteration metrics of the sampled groups (per modality for vision)."""
        del tasks, correct
        return {}

    def evaluate(self, engine, setup, per_band: int) -> dict[str, tuple[float, float]]:
        """{band: (greedy accuracy, mean response tokens)} on the held-out split."""
        return evaluate(engine, setup, per_band)

    def heldout_rows(self, per_band: int) -> list[dict]:
        """The held-out set as written to eval/heldout.jsonl (prompt text as fed)."""
        return [{"prompt": p, "reference": r, "band": b} for p, r, b in heldout(self, per_band)]

    def write_outputs(self, params, setup, records: list[dict], summary: dict) -> None:
        """Extra outputs of a finished run (vision: the tower, modality plot and summary)."""
        del params, setup, records, summary


class FilePrompts(TextPrompts):
    """Prompts from files: `data.train` / `data.eval` sources (jsonl or parquet: MATH, GSM8K,
    AIME, curated rows, code problems), rendered as one user turn of the tokenizer's chat
    template. Each eval source is one "band" of the held-out evaluation. Code tasks are
    judged by the sandbox (started for the run unless reward.sandbox is a URL).

    Prompts longer than rollout.max_prompt_len, and rows the curation marked trivial (pass
    rate 1, report sec. 2.1), are dropped before RL and counted in `dropped`.
    """

    def __init__(self, cfg, tokenizer, run_dir):
        self.tokenizer, self.chat, self.code_scorer = tokenizer, cfg.data.template, None
        self.template = kind_template(self.chat, "math")  # its prefix is part of the answer
        self.max_prompt_len, self.dropped = cfg.rollout.max_prompt_len, {}
        train_cfgs = [source_config(x) for x in cfg.data.train]
        eval_cfgs = [source_config(x) for x in cfg.data.eval]
        train = [load_source(c, f"data.train[{i}]") for i, c in enumerate(train_cfgs)]
        evals = [load_source(c, f"data.eval[{i}]") for i, c in enumerate(eval_cfgs)]
        if any(task_kind(t) == "code" for ts in train + evals for t in ts):
            self.code_scorer = code_scorer(cfg.reward)
            cache = Path(run_dir) / "code_cases.jsonl"
            train = [code_cases(ts, self.code_scorer.client, cache) for ts in train]
            evals = [code_cases(ts, self.code_scorer.client, cache) for ts in evals]
        self.pool, self.weights = mix(
            [self._usable(ts, f"data.train[{i}]") for i, ts in enumerate(train)],
            [c.weight for c in train_cfgs],
        )
        self.eval_sets = {
            source_name(c): self._usable(ts, f"data.eval[{i}]")
            for i, (c, ts) in enumerate(zip(eval_cfgs, evals))
        }
        self.sft_rows = [r for path in cfg.data.sft for r in load_sft_rows(path)]
        self.suite = None
        for key, n in self.dropped.items():
            log.info(
                "%s: %d prompts dropped (longer than rollout.max_prompt_len, or trivial)", key, n
            )

    def _usable(self, tasks: list, key: str) -> list:
        keep = [
            t
            for t in tasks
            if t.meta.get("pass_rate") != 1 and len(self.prompt_ids(t)) <= self.max_prompt_len
        ]
        if len(keep) < len(tasks):
            self.dropped[key] = len(tasks) - len(keep)
        return keep

    @property
    def bands(self) -> list[str]:
        """The eval sources (per-tag figures are logged beside them)."""
        return list(self.eval_sets)

    @property
    def has_sft(self) -> bool:
        return bool(self.sft_rows)

    def write_outputs(self, params, setup, records: list[dict], summary: dict) -> None:
        """summary.json: accuracy per eval source (start and end) and the dropped prompts."""
        summary["eval_accuracy"] = summary["eval_accuracy_by_band"]
        summary["dropped_prompts"] = dict(self.dropped)

    def prompt_ids(self, task) -> list[int]:
        return chat_prompt(self.tokenizer, self.chat, task)

    def sft_examples(self, n: int, rng) -> list[tuple]:
        """n (prompt ids, response ids) from data.sft's prompt/response rows (long-CoT traces)."""
        if not self.sft_rows:
            raise ValueError("the SFT warm-up needs data.sft=[FILE.jsonl] (prompt/response rows)")
        tok = self.tokenizer
        pick = rng.choice(len(self.sft_rows), size=n, replace=len(self.sft_rows) < n)
        return [
            (self.prompt_ids(self.sft_rows[i][0]), tok.encode(self.sft_rows[i][1], eos=True))
            for i in pick
        ]

    def evaluate(self, engine, setup, per_band: int) -> dict[str, tuple[float, float]]:
        """{eval source: (greedy accuracy, mean response tokens)}, scored by task kind."""
        out = {}
        for name, tasks in self.eval_sets.items():
            tasks = tasks[:per_band]
            ids = [f"eval{i}" for i in range(len(tasks))]
            requests = [(rid, self.prompt_ids(t)) for rid, t in zip(ids, tasks)]
            ro, group_ids, _, _ = driver.collect(
                engine, requests, k=1, iteration=0, key=jax.random.key(0), buffer=RolloutBuffer()
            )
            rows = request_rows(group_ids, ids, 1)
            texts = response_texts(ro, rows, self.tokenizer, self.template)
            verify = route_by_kind(make_verifier(RewardConfig()), self.code_scorer, tasks)
            v, _ = verify([t.prompt for t in tasks], texts, [t.reference for t in tasks])
            length = np.asarray(ro.length)[rows].astype(np.float64)
            out[name] = (float(np.mean(v >= 0.5)), float(length.mean()))
            tags = np.array([t.band for t in tasks])
            if len(set(tags)) > 1:  # per difficulty / level tag within the source
                for tag in sorted(set(tags)):
                    sel = tags == tag
                    out[f"{name}/{tag}"] = (
                        float(np.mean(v[sel] >= 0.5)),
                        float(length[sel].mean()),
                    )
        return out

    def heldout_rows(self, per_band: int) -> list[dict]:
        """Each held-out prompt exactly as fed to the model (the rendered chat text)."""
        return [
            {
                "prompt": self.tokenizer.decode(self.prompt_ids(t), skip_special=False),
                "reference": t.reference,
                "band": name,
                "id": t.id,
            }
            for name, tasks in self.eval_sets.items()
            for t in tasks[:per_band]
        ]
