"""experiments.losses_report: tables per arm and seed, means with spread, sampled tokens, and the
generated blocks of docs/losses.md replaced in place (the prose around them kept)."""

import json

import numpy as np

from experiments import losses_report


def _fake_run(path, name, seed, start, end, secs, tokens):
    path.mkdir(parents=True)
    acc = lambda v: {"add1": 1.0, "add5": v}
    summary = {
        "experiment": name,
        "seed": seed,
        "hardest_band": "add5",
        "eval_accuracy_by_band": {"start": acc(start), "end": acc(end)},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    recs = [
        {
            "phase": "rl",
            "iteration": it,
            "train/reward_mean": 0.5,
            "train/response_len": 40.0 + it,
            "time/iteration_s": secs,
            "rollout/tokens_generated": tokens,
            "offpolicy/old_frac": 0.0,
        }
        for it in range(4)
    ]
    for it, v in ((0, start), (2, (start + end) / 2), (4, end)):
        recs.append({"phase": "eval", "iteration": it, "eval/acc/add1": 1.0, "eval/acc/add5": v})
        recs[-1]["eval/len/add5"] = 60.0
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))


def test_report_tables_and_blocks(tmp_path):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    for seed, (s, e) in enumerate([(0.5, 0.7), (0.1, 0.1), (0.6, 0.9)]):
        _fake_run(runs / f"curriculum-seed{seed}", "curriculum", seed, s, e, 2.0, 1000)
    _fake_run(runs / "dapo-seed0", "dapo", 0, 0.5, 0.6, 4.0, 2000)
    docs.mkdir()
    (docs / "losses.md").write_text("intro\n<!-- main:begin -->\nold\n<!-- main:end -->\nend\n")
    losses_report.main(["--runs", str(runs), "--out", str(docs)])
    text = (docs / "losses.md").read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "\nold\n" not in text
    assert "| mirror descent (k1.5) | 0 | 100 -> 100 | 50 -> 70 | 2.00 | 1000 |" in text
    assert "| DAPO | 0 | 100 -> 100 | 50 -> 60 | 4.00 | 2000 |" in text
    end = np.array([0.7, 0.1, 0.9])
    mean_row = f"{100 * end.mean():.1f} ± {100 * end.std():.1f} (+16.7, +0..+30)"
    assert mean_row in text
    assert (docs / "img" / "losses-main.png").stat().st_size > 1000
    assert "<!-- partial:begin -->" not in text  # no partial runs: that set is skipped
    x, tok = losses_report.eval_tokens(losses_report.load_run(runs / "dapo-seed0")["records"])
    np.testing.assert_array_equal(x, [0, 2, 4])
    np.testing.assert_array_equal(tok, [0, 4000, 8000])


def test_report_prefers_rescored_start_and_end(tmp_path):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    _fake_run(runs / "grpo-seed1", "grpo", 1, 0.5, 0.7, 2.0, 1000)
    rescored = {"sft-seed1": {"add1": 1.0, "add5": 0.55}, "grpo-seed1": {"add1": 0.9, "add5": 0.8}}
    (runs / "reeval.json").write_text(json.dumps(rescored))
    docs.mkdir()
    losses_report.main(["--runs", str(runs), "--out", str(docs)])
    assert "| GRPO | 1 | 100 -> 90 | 55 -> 80 | 2.00 | 1000 |" in (docs / "losses.md").read_text()
