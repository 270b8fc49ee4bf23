"""The vision preset end to end (slow: about 2 minutes on 2 cores): a tiny joint text-image
run with a MathVista file holding a corrupt image, then its summary and plots."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT


@pytest.mark.slow
def test_vision_run_reports_modalities_and_skips_a_corrupt_image(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "bad.png").write_bytes(b"\x89PNG not really")
    rows = [
        {"pid": "1", "question": "How many?", "image": "img/ok.png", "answer": "1"},
        {"pid": "2", "question": "How many?", "image": "img/bad.png", "answer": "2"},
    ]
    (tmp_path / "mv.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "+exp=vision",
        "sft.steps=20",
        "trainer.iterations=2",
        "trainer.eval_every=2",
        "trainer.eval_per_band=3",
        "sampler.batch_prompts=4",
        "sampler.samples_per_prompt=4",
        "rollout.slots=16",
        f"vision.mathvista.path={tmp_path / 'mv.jsonl'}",
        f"trainer.run_dir={run_dir}",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bad.png" in proc.stderr and "skipped 1 of 2" in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    for when in ("start", "end"):
        assert set(summary["eval_accuracy_by_modality"][when]) == {"text", "image"}
        for band in ("imgadd1", "imgadd2"):
            side = summary["text_vs_image"][band][when]
            assert set(side) == {"text", "image", "agree"} and None not in side.values()
        assert "mathvista" in summary["eval_accuracy_by_band"][when]
    assert summary["mathvista"]["skipped_images"] == 1
    assert (run_dir / "modality_accuracy.png").stat().st_size > 0
    assert (run_dir / "final" / "vision" / "model.safetensors").is_file()
    heldout = [json.loads(x) for x in (run_dir / "eval" / "heldout.jsonl").read_text().splitlines()]
    assert {r.get("modality", "text") for r in heldout} == {"text", "image"}
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r.get("phase") == "rl"]
    assert all(r["rollout/logp_gap_max"] < 1e-3 for r in rl)
