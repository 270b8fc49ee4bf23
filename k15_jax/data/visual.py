"""The embedded visual task suite: small rendered images with verifiable numeric answers.

Drawn with Pillow at the ViT's image size (default 32x32 px, patch 8), deterministic from
seeds, so a tiny policy on a CPU can learn it. The report's three kinds of vision RL data:

  scenes (counting and comparing objects)
    count1    1-3 shapes of any colour           "shapes?"      -> how many
    count2    2-6 red and blue shapes            "red?"         -> how many red
    compare1  red and blue shapes                "red-blue?"    -> red minus blue (>= 0)
  synthetic visual reasoning (shapes, charts)
    sides1    one regular polygon, 3-6 sides     "sides?"       -> its number of sides
    bars1     a 3-bar chart                      "tallest bar?" -> index (1-3) of the tallest
  text-rendered problems (the synthetic suite's arithmetic, drawn as an image)
    imgadd<n> "a" over "+b" in a 3x5 pixel font  "solve:"       -> the worked solution of
              add<n> (same lines, same \\boxed{a+b}): the same problem exists as text
              (band add<n>) and as image, with the same held-out split.

A task's image is rendered from its meta (`render`), never stored. Scene bands enumerate
`_SCENES` seeds per band; the held-out split is the synthetic suite's prompt hash of
"<band>/<seed>" (scenes) or of the arithmetic prompt "a+b" (text-rendered, so a problem
held out as text is held out as image too).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from k15_jax.data.loaders import Task
from k15_jax.data.synthetic import (
    is_eval_prompt,
    make_task,
    n_digit_range,
    stable_int,
    worked_solution,
)

_SCENES = 1_000_000  # seeds per scene band
QUESTIONS = {
    "count1": "shapes?",
    "count2": "red?",
    "compare1": "red-blue?",
    "sides1": "sides?",
    "bars1": "tallest bar?",
    "imgadd": "solve:",
}
KINDS = {
    "count1": "scene",
    "count2": "scene",
    "compare1": "scene",
    "sides1": "synthetic",
    "bars1": "synthetic",
    "imgadd": "text_rendered",
}
_COLOURS = {
    "red": (220, 40, 40),
    "blue": (40, 70, 220),
    "green": (40, 160, 60),
    "orange": (240, 150, 20),
}
# 3x5 glyphs, rows top to bottom
GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "+": ("000", "010", "111", "010", "000"),
}


@dataclasses.dataclass
class VisualConfig:
    """Bands of the visual suite, their SFT mix, seeds and split sizes."""

    bands: list[str] = dataclasses.field(
        default_factory=lambda: [
            "count1",
            "count2",
            "compare1",
            "sides1",
            "bars1",
            "imgadd1",
            "imgadd2",
        ]
    )
    sft_band_weights: list[float] | None = None  # None: uniform
    seed: int = 0
    eval_seed: int = 0
    eval_fraction: float = 0.1
    eval_per_band: int = 200
    pool_per_band: int = 1000


def parse_visual_band(band: str) -> tuple[str, int]:
    """'count2' -> ('count2', 0); 'imgadd2' -> ('imgadd', 2); ValueError naming the key."""
    if band in QUESTIONS and band != "imgadd":
        return band, 0
    if band.startswith("imgadd") and band[6:].isdigit() and 1 <= int(band[6:]) <= 2:
        return "imgadd", int(band[6:])
    raise ValueError(
        f"unknown visual band {band!r} in vision.visual.bands; use one of "
        f"{sorted(b for b in QUESTIONS if b != 'imgadd')} or imgadd1 / imgadd2"
    )


def _scene(band: str, seed: int) -> tuple[dict, str]:
    """The scene's drawing parameters and its answer, from (band, seed) only."""
    rng = np.random.default_rng([stable_int(band), seed])
    cells = [int(c) for c in rng.permutation(16)]  # 4x4 grid: objects never overlap
    if band == "count1":
        n = int(rng.integers(1, 4))
        colours = [str(c) for c in rng.choice(list(_COLOURS), n)]
        return {"cells": cells[:n], "colours": colours}, str(n)
    if band in ("count2", "compare1"):
        if band == "count2":
            n = int(rng.integers(2, 7))
            red = int(rng.integers(0, n + 1))
        else:
            blue = int(rng.integers(0, 3))
            red = blue + int(rng.integers(0, 4))
            n = red + blue
        colours = ["red"] * red + ["blue"] * (n - red)
        colours = [colours[i] for i in rng.permutation(n)]
        answer = red if band == "count2" else red - (n - red)
        return {"cells": cells[:n], "colours": colours}, str(answer)
    if band == "sides1":
        sides = int(rng.integers(3, 7))
        scene = {
            "sides": sides,
            "angle": float(rng.uniform(0, 2 * math.pi)),
            "colour": str(rng.choice(list(_COLOURS))),
        }
        return scene, str(sides)
    if band == "bars1":
        heights = [int(h) for h in rng.choice(np.arange(1, 7), 3, replace=False)]
        return {"heights": heights}, str(int(np.argmax(heights)) + 1)
    raise ValueError(band)


def _draw_scene(draw: ImageDraw.ImageDraw, band: str, scene: dict, size: int) -> None:
    cell = size / 4
    if "cells" in scene:
        r = cell * 0.34
        for c, colour in zip(scene["cells"], scene["colours"]):
            cx, cy = (c % 4 + 0.5) * cell, (c // 4 + 0.5) * cell
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_COLOURS[colour])
    elif band == "sides1":
        n, a0, rad = scene["sides"], scene["angle"], size * 0.42
        pts = [
            (
                size / 2 + rad * math.cos(a0 + 2 * math.pi * i / n),
                size / 2 + rad * math.sin(a0 + 2 * math.pi * i / n),
            )
            for i in range(n)
        ]
        draw.polygon(pts, fill=_COLOURS[scene["colour"]])
    elif band == "bars1":
        unit, width = (size - 4) / 6, size / 5
        for i, h in enumerate(scene["heights"]):
            x0 = width * (0.5 + 1.5 * i)
            draw.rectangle((x0, size - 2 - h * unit, x0 + width, size - 2), fill=(40, 40, 40))


def _draw_text(draw: ImageDraw.ImageDraw, lines: list[str], size: int) -> None:
    """Right-aligned lines in the 3x5 font at scale size // 16 (2 px per dot at 32 px)."""
    s = max(1, size // 16)
    pitch, line_h = 4 * s, 6 * s
    top = (size - len(lines) * line_h) // 2
    for li, text in enumerate(lines):
        x = size - 2 * s - pitch * len(text)
        for ch in text:
            for row, bits in enumerate(GLYPHS[ch]):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        y0, x0 = top + li * line_h + row * s, x + col * s
                        draw.rectangle((x0, y0, x0 + s - 1, y0 + s - 1), fill=(0, 0, 0))
            x += pitch


def render(task: Task, size: int) -> Image.Image:
    """The task's image (RGB, size x size), deterministic from task.meta."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if task.meta["kind"] == "text_rendered":
        a, b = task.meta["operands"]
        _draw_text(draw, [str(a), f"+{b}"], size)
    else:
        _draw_scene(draw, task.band, task.meta["scene"], size)
    return img


def text_twin(task: Task) -> Task:
    """The text version of a text-rendered task: the synthetic suite's add<n> task."""
    a, b = task.meta["operands"]
    return make_task(f"add{task.meta['n_digits']}", a, b)


def make_visual_task(band: str, k: int) -> Task:
    """Problem k of a band (a scene seed, or the k-th (a, b) pair for imgadd<n>)."""
    kind, n = parse_visual_band(band)
    if kind == "imgadd":
        lo, hi = n_digit_range(n)
        a, b = lo + k // (hi - lo + 1), lo + k % (hi - lo + 1)
        twin = make_task(f"add{n}", a, b)
        meta = {
            **twin.meta,
            "source": "visual",
            "modality": "image",
            "kind": KINDS[kind],
            "text_band": twin.band,
            "images": 1,
        }
        return Task(
            id=f"{band}/{twin.prompt}",
            prompt=QUESTIONS[kind],
            reference=twin.reference,
            band=band,
            domain="vision",
            solution=twin.solution,
            meta=meta,
        )
    scene, answer = _scene(band, k)
    meta = {
        "source": "visual",
        "modality": "image",
        "kind": KINDS[kind],
        "scene": scene,
        "seed": k,
        "images": 1,
    }
    return Task(
        id=f"{band}/{k}",
        prompt=QUESTIONS[kind],
        reference=answer,
        band=band,
        domain="vision",
        solution=f"\\boxed{{{answer}}}",
        meta=meta,
    )


def _split_key(band: str, k: int) -> str:
    kind, n = parse_visual_band(band)
    if kind == "imgadd":
        return text_twin(make_visual_task(band, k)).prompt
    return f"{band}/{k}"


def _space(band: str) -> int:
    kind, n = parse_visual_band(band)
    if kind == "imgadd":
        lo, hi = n_digit_range(n)
        return (hi - lo + 1) ** 2
    return _SCENES


def demonstration(task: Task) -> str:
    if task.meta["kind"] == "text_rendered":
        a, b = task.meta["operands"]
        return worked_solution("add", a, b, task.meta["n_digits"])
    return task.solution


class VisualSuite:
    """Bands, held-out eval lists, training draws and pools of the visual suite (the same
    API as `SyntheticSuite`)."""

    def __init__(self, cfg: VisualConfig | None = None):
        self.cfg = cfg or VisualConfig()
        if not self.cfg.bands:
            raise ValueError("vision.visual.bands is empty; list bands such as ['count1']")
        for band in self.cfg.bands:
            parse_visual_band(band)
        w = self.cfg.sft_band_weights
        w = np.ones(len(self.bands)) if w is None else np.asarray(w, np.float64)
        if w.shape != (len(self.bands),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"vision.visual.sft_band_weights={self.cfg.sft_band_weights} must give one "
                f"non-negative weight per band ({self.bands}), not all zero"
            )
        self.sft_weights = w / w.sum()
        self._eval: dict[str, list[Task]] = {}
        self._pool: dict[str, list[Task]] = {}

    @property
    def bands(self) -> list[str]:
        return list(self.cfg.bands)

    def _draw(self, band: str, count: int, rng, want_eval: bool) -> list[Task]:
        size, out, seen = _space(band), [], set()
        frac = self.cfg.eval_fraction
        order = rng.permutation(size) if size <= 50_000 else None
        i = 0
        while len(out) < count and (order is None or i < size):
            k = int(order[i]) if order is not None else int(rng.integers(0, size))
            i += 1
            if k in seen:
                continue
            seen.add(k)
            if is_eval_prompt(_split_key(band, k), frac) == want_eval:
                out.append(make_visual_task(band, k))
        return out

    def eval_tasks(self, band: str) -> list[Task]:
        if band not in self._eval:
            rng = np.random.default_rng([self.cfg.eval_seed, stable_int(band), 0])
            self._eval[band] = self._draw(band, self.cfg.eval_per_band, rng, True)
        return list(self._eval[band])

    def train_pool(self, bands=None) -> list[Task]:
        out = []
        for band in bands or self.bands:
            if band not in self._pool:
                rng = np.random.default_rng([self.cfg.seed, stable_int(band), 1])
                self._pool[band] = self._draw(band, self.cfg.pool_per_band, rng, False)
            out.extend(self._pool[band])
        return out

    def sft_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        """n training draws in the SFT band mix (outside the held-out split)."""
        out = []
        for b in rng.choice(len(self.bands), size=n, p=self.sft_weights):
            band = self.bands[int(b)]
            while True:
                k = int(rng.integers(0, _space(band)))
                if not is_eval_prompt(_split_key(band, k), self.cfg.eval_fraction):
                    out.append(make_visual_task(band, k))
                    break
        return out

    def demonstration(self, task: Task) -> str:
        return demonstration(task)
