"""Images through the trainer: prompts with placeholders, image batches, SFT mix, evaluation.

One `VisionData` per run (`train.setup.build` makes it when vision.enabled). A task is an image
task when task.meta["modality"] == "image"; its prompt ids are

    [BOS] + [image_token_id] * (images x patches) + text(prompt)

and its patches come from `render` (visual suite) or the image file (MathVista), cached.
Text tasks keep the exact text-only encoding. Batches of image rows are [rows, M, P, C],
zero-padded (`data.images.pad_images`); a text row in a vision batch has no placeholders,
so its padding images are never read.
"""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from k15_jax.data.images import image_patches, load_image, pad_images
from k15_jax.data.mathvista import load_mathvista
from k15_jax.data.templates import render as render_prompt
from k15_jax.data.visual import VisualSuite, make_visual_task, parse_visual_band
from k15_jax.data.visual import render as render_image
from k15_jax.model.config import VisionConfig
from k15_jax.train.metrics import log


def modality(task) -> str:
    return task.meta.get("modality", "text")


def image_twin(text_task) -> object:
    """The text-rendered (image) version of a synthetic add<n> task: same operands."""
    a, b = text_task.meta["operands"]
    n = text_task.meta["n_digits"]
    lo = 0 if n == 1 else 10 ** (n - 1)
    span = 10**n - lo
    return make_visual_task(f"imgadd{n}", (a - lo) * span + (b - lo))


class VisionData:
    def __init__(self, run_cfg, v: VisionConfig, text_suite):
        self.v, self.run_cfg, self.text_suite = v, run_cfg, text_suite
        visual = run_cfg.visual
        visual = OmegaConf.to_object(visual) if OmegaConf.is_config(visual) else visual
        self.suite = VisualSuite(visual)
        self.mathvista, self.mathvista_stats = [], {}
        if run_cfg.mathvista.path:
            mv = run_cfg.mathvista
            self.mathvista, self.mathvista_stats = load_mathvista(mv.path, mv.images_dir, mv.band)
            log.info(
                "MathVista: %d tasks (%d rows skipped for their image)",
                len(self.mathvista),
                self.mathvista_stats["skipped_images"],
            )
        self._patches: dict[str, np.ndarray] = {}

    # ---- prompts and images ----
    def images(self, task) -> np.ndarray | None:
        """Patches [m, P, C] of an image task (cached), None for a text task."""
        if modality(task) != "image":
            return None
        if task.id not in self._patches:
            if "image_path" in task.meta:
                img = load_image(task.meta["image_path"])
            else:
                img = render_image(task, self.v.image_size)
            self._patches[task.id] = image_patches(img, self.v)[None]
        return self._patches[task.id]

    def prompt_ids(self, tok, template, task) -> list[int]:
        text = tok.encode(render_prompt(template, task.prompt), bos=True)
        imgs = self.images(task)
        if imgs is None:
            return text
        return text[:1] + [self.v.image_token_id] * (len(imgs) * self.v.num_patches) + text[1:]

    def batch(self, tasks, rows: int | None = None) -> np.ndarray:
        """[rows, max_images, P, C] for these tasks (None entries and extra rows: zeros)."""
        per_row = [None if t is None else self.images(t) for t in tasks]
        per_row += [None] * ((rows or len(per_row)) - len(per_row))
        return pad_images(per_row, self.v.max_images, self.v)

    # ---- SFT ----
    def sft_examples(self, n: int, rng, tok, template) -> list[tuple[list[int], list[int], object]]:
        """n (prompt ids, response ids, task) with a vision.sft_image_fraction share of
        visual tasks; text examples are encoded exactly as in the text-only run."""
        n_img = int(rng.binomial(n, self.run_cfg.sft_image_fraction))
        tasks = self.text_suite.sft_tasks(n - n_img, rng) + self.suite.sft_tasks(n_img, rng)
        tasks = [tasks[i] for i in rng.permutation(len(tasks))]
        out = []
        for t in tasks:
            demo = (
                self.suite.demonstration(t)
                if modality(t) == "image"
                else (self.text_suite.demonstration(t))
            )
            out.append((self.prompt_ids(tok, template, t), tok.encode(demo, eos=True), t))
        return out

    def packed_images(self, tasks, placement, rows: int, row_len: int) -> np.ndarray:
        """The images of packed SFT rows [rows, M_row, P, C], each row's in segment order;
        M_row = row_len // P (the most images a row's placeholders can hold)."""
        per_row = [[] for _ in range(rows)]
        for t, r in zip(tasks, placement):
            if r >= 0 and modality(t) == "image":
                per_row[r].extend(self.images(t))
        m = max(1, row_len // self.v.num_patches)
        arr = [np.stack(x) if x else None for x in per_row]
        return pad_images(arr, m, self.v)

    # ---- evaluation items ----
    def eval_items(self, per_band: int, text_bands) -> list[tuple[object, str]]:
        """(task, band) of the held-out set: the text bands, the visual bands, MathVista.
        imgadd<n> is evaluated on the image twins of add<n>'s held-out problems, and add<n>
        as text on the same problems (band 'add<n>' is added if the run lacks it), so the
        two modalities are compared on identical problems."""
        items = [(t, b) for b in text_bands for t in self.text_suite.eval_tasks(b)[:per_band]]
        for band in self.suite.bands:
            kind, n = parse_visual_band(band)
            if kind == "imgadd":
                twins = self.text_suite.eval_tasks(f"add{n}")[:per_band]
                items += [(image_twin(t), band) for t in twins]
                if f"add{n}" not in text_bands:
                    items += [(t, f"add{n}") for t in twins]
            else:
                items += [(t, band) for t in self.suite.eval_tasks(band)[:per_band]]
        items += [(t, t.band) for t in self.mathvista[:per_band]]
        return items
