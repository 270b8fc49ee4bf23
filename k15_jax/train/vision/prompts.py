"""The prompt source of a vision run: text and image tasks through `TextPrompts`' methods.

Image prompts get placeholders and patches (`VisionData`); the loss batch and packed SFT rows
get their images in row order; metrics and evaluation split by modality; a finished run also
exports the trained tower and writes the per-modality plot and summary entries.
"""

import numpy as np

from k15_jax.model.siglip import export_siglip
from k15_jax.train.prompts import TextPrompts
from k15_jax.train.vision.data import VisionData, modality
from k15_jax.train.vision.eval import evaluate_vision, plot_modalities, vision_summary


class VisionPrompts(TextPrompts):
    def __init__(self, suite, tokenizer, template, data: VisionData):
        super().__init__(suite, tokenizer, template)
        self.data = data
        self.pool = self.pool + data.suite.train_pool()

    def prompt_ids(self, task) -> list[int]:
        return self.data.prompt_ids(self.tokenizer, self.template, task)

    def images(self, task) -> np.ndarray | None:
        return self.data.images(task)

    def request_images(self, tasks_by_id: dict) -> dict:
        # one image prefix per prompt, shared by its K samples
        return {rid: self.data.images(t) for rid, t in tasks_by_id.items()}

    def loss_images(self, tasks: list, rows: int) -> np.ndarray:
        return self.data.batch(tasks, rows)

    def sft_examples(self, n: int, rng) -> list[tuple]:
        """(prompt ids, response ids, task): the task carries the images."""
        return self.data.sft_examples(n, rng, self.tokenizer, self.template)

    def sft_images(self, examples, placement, rows: int, row_len: int) -> np.ndarray:
        return self.data.packed_images([e[2] for e in examples], placement, rows, row_len)

    def train_metrics(self, tasks: list, correct: np.ndarray) -> dict:
        out = {}
        for mod in ("text", "image"):
            sel = np.array([modality(t) == mod for t in tasks])
            if sel.any():
                out[f"train/acc/modality/{mod}"] = float(correct[sel].mean())
        return out

    def evaluate(self, engine, setup, per_band: int) -> dict[str, tuple[float, float]]:
        return evaluate_vision(engine, setup, per_band)

    def heldout_rows(self, per_band: int) -> list[dict]:
        rows = super().heldout_rows(per_band)
        for t, band in self.data.eval_items(per_band, []):  # the task id names the image
            if modality(t) == "image":
                rows.append(
                    {
                        "prompt": t.prompt,
                        "reference": t.reference,
                        "band": band,
                        "modality": "image",
                        "id": t.id,
                    }
                )
        return rows

    def write_outputs(self, params, setup, records: list[dict], summary: dict) -> None:
        """The trained tower as a transformers SiglipVisionModel; accuracy per modality."""
        export_siglip(params["vision"], setup.model.vision, setup.run_dir / "final" / "vision")
        plot_modalities(records, setup.run_dir)
        ev = summary["eval_accuracy_by_band"]
        summary.update(vision_summary(setup, ev["start"], ev["end"]))
