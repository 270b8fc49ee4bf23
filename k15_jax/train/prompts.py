"""Where a run's prompts come from: the one object the trainer asks for prompt ids, images,
SFT demonstrations, held-out evaluation and the held-out rows it writes.

`TextPrompts` serves the text-only suite. A vision run uses `train.vision.prompts.VisionPrompts`,
which adds image placeholders, image batches and per-modality metrics through the same
methods, so the loop has no vision branches.
"""

import numpy as np

from k15_jax.data.templates import render
from k15_jax.eval.heldout import evaluate, heldout


class TextPrompts:
    """The synthetic suite's tasks, encoded with the run's template and tokenizer."""

    def __init__(self, suite, tokenizer, template):
        self.suite, self.tokenizer, self.template = suite, tokenizer, template
        self.pool = suite.train_pool()

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
            (self.prompt_ids(t), tok.encode(self.suite.demonstration(t), eos=True))
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
