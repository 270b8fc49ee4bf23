"""One metrics writer (metrics.jsonl + TensorBoard) and one progress-bar style."""

import json
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger("k15_jax")


def setup_logging() -> None:
    # orbax logs every checkpoint step at INFO through absl
    logging.getLogger("absl").setLevel(logging.WARNING)
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


def progress(total: int, desc: str, initial: int = 0):
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        leave=True,
        mininterval=2.0,
        file=sys.stderr,
    )


class MetricsWriter:
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard.

    `truncate(n)` drops records written after a checkpoint when a run resumes, so a resumed
    run's metrics.jsonl equals an uninterrupted run's.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.touch()
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def lines(self) -> int:
        return sum(1 for _ in self.path.open())

    def truncate(self, n: int) -> None:
        kept = self.path.read_text().splitlines(keepends=True)[:n]
        self.path.write_text("".join(kept))

    def write(self, record: dict, step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.path.open() if line.strip()]

    def close(self) -> None:
        self.tb.close()
