"""Long-CoT SFT demonstrations from files (report sec. 2.2): jsonl rows of `prompt` and
`response` (e.g. long-CoT traces), for `data.sft=[FILE.jsonl]`."""

import json
from pathlib import Path

from k15_jax.data.loaders import Task


def load_sft_rows(path: str) -> list[tuple[Task, str]]:
    """(task holding the prompt, response text) per row; a malformed line or a row without
    `prompt` / `response` fails naming file:line."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"data.sft: no file {p}; give jsonl files of prompt/response rows")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{n}: malformed JSON ({e.msg}); fix or remove the line") from None
        missing = [k for k in ("prompt", "response") if not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"{p}:{n}: the row has no {' / '.join(missing)} text")
        task = Task(id=f"{p.stem}:{n}", prompt=row["prompt"], reference="", meta={"line": n})
        out.append((task, row["response"]))
    return out
