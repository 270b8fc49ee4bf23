"""A local MathVista-format benchmark: a jsonl of problems and a directory of images.

Rows follow MathVista's testmini fields: `pid`, `question` (or the full `query`),
`image` (a path relative to the images directory), `answer`, optionally `question_type`
("multi_choice" / "free_form"), `choices`, `unit`. The answer is the verifier's reference
(for multiple choice, the text of the right choice, as MathVista stores it).

Every image is opened and decoded at load time: a missing or corrupt file is logged with
its path and the row skipped and counted (`stats["skipped_images"]`), never a crash later
in the run. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from k15_jax.data.images import ImageError, load_image
from k15_jax.data.loaders import Task, read_jsonl, required_field

log = logging.getLogger("k15_jax")


@dataclasses.dataclass
class MathVistaConfig:
    """path: the jsonl (None: not used). images_dir: where `image` paths are relative to
    (None: the jsonl's directory). band: the band name its tasks get."""

    path: str | None = None
    images_dir: str | None = None
    band: str = "mathvista"


def _prompt(row: dict, path: Path, lineno: int) -> str:
    if row.get("query"):
        return str(row["query"])
    text = required_field(row, "question", path, lineno)
    if row.get("question_type") == "multi_choice" and row.get("choices"):
        letters = "ABCDEFGH"
        text += "\nChoices:\n" + "\n".join(
            f"({letters[i]}) {c}" for i, c in enumerate(row["choices"])
        )
    return text


def load_mathvista(path, images_dir=None, band: str = "mathvista") -> tuple[list[Task], dict]:
    """(tasks, stats) from a MathVista-format jsonl; stats counts rows, loaded tasks and
    skipped images (with their paths under "skipped_paths")."""
    path = Path(path)
    root = Path(images_dir) if images_dir else path.parent
    tasks, skipped = [], []
    rows = 0
    for lineno, row in read_jsonl(path, config_key="vision.mathvista.path"):
        rows += 1
        image_path = root / required_field(row, "image", path, lineno)
        try:
            load_image(image_path)
        except ImageError as e:
            log.warning("MathVista %s line %d: %s; skipping the row", path, lineno, e)
            skipped.append(str(image_path))
            continue
        pid = str(row.get("pid", lineno))
        tasks.append(
            Task(
                id=f"mathvista/{pid}",
                prompt=_prompt(row, path, lineno),
                reference=required_field(row, "answer", path, lineno),
                band=band,
                domain="vision",
                meta={
                    "source": "mathvista",
                    "modality": "image",
                    "kind": "mathvista",
                    "image_path": str(image_path),
                    "images": 1,
                    "line": lineno,
                    "question_type": row.get("question_type", "free_form"),
                },
            )
        )
    if skipped:
        log.warning(
            "MathVista %s: skipped %d of %d rows whose image is missing or corrupt",
            path,
            len(skipped),
            rows,
        )
    stats = {
        "rows": rows,
        "loaded": len(tasks),
        "skipped_images": len(skipped),
        "skipped_paths": skipped,
    }
    return tasks, stats
