"""experiments.report_ablations on fake runs with known figures: the tables' means, per-seed
values, tokens per correct answer, sampled tokens and the long2short token change are
recomputed here from the fake data."""

import json

import numpy as np

from experiments import report_ablations

BANDS = ["add1", "add2", "add3", "add4"]


def _fake_run(path, name, seed, acc, length, tokens_per_iter):
    """A finished run: accuracy and length per band go from 0.1 / 10 to acc / length."""
    path.mkdir(parents=True)
    start_acc = dict.fromkeys(BANDS, 0.1)
    start_len = dict.fromkeys(BANDS, 10.0)
    summary = {
        "experiment": name,
        "seed": seed,
        "hardest_band": "add4",
        "wall_time_s": 300.0 + seed,
        "eval_accuracy_by_band": {"start": start_acc, "end": dict.fromkeys(BANDS, acc)},
        "eval_length_by_band": {"start": start_len, "end": dict.fromkeys(BANDS, length)},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    recs = []
    for it in range(30):
        recs.append(
            {
                "phase": "rl",
                "iteration": it,
                "rollout/tokens_generated": tokens_per_iter,
                "train/acc/add4": 0.5,
                "train/response_len_p50": 20.0,
                "train/response_len_p90": 40.0,
            }
        )
    for it in (0, 5, 10, 15, 30):
        a, n = (0.1, 10.0) if it == 0 else (acc, length)
        recs.append(
            {"phase": "eval", "iteration": it}
            | {f"eval/acc/{b}": a for b in BANDS}
            | {f"eval/len/{b}": n for b in BANDS}
        )
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))


def _fake_long2short(path, long_tokens, rl_tokens, rl_acc):
    out = path / "long2short"
    out.mkdir(parents=True)
    res = {
        "long": {
            "accuracy": dict.fromkeys(BANDS, 0.9),
            "tokens": dict.fromkeys(BANDS, long_tokens),
        },
        "rl": {"accuracy": dict.fromkeys(BANDS, rl_acc), "tokens": dict.fromkeys(BANDS, rl_tokens)},
    }
    (out / "results.json").write_text(json.dumps(res))


def test_tables_from_fake_runs(tmp_path):
    runs = tmp_path / "runs"
    for seed, (acc, length) in enumerate([(0.8, 50.0), (1.0, 100.0)]):
        _fake_run(runs / f"curriculum-seed{seed}", "curriculum", seed, acc, length, 1000.0)
        _fake_run(runs / f"rest-seed{seed}", "rest", seed, 0.5, 20.0, 500.0)
    _fake_long2short(runs / "long2short-seed0", 100.0, 50.0, 0.9)
    _fake_long2short(runs / "long2short-seed1", 80.0, 80.0, 0.7)
    report_ablations.main([str(runs), "--out", str(tmp_path / "docs")])
    text = (tmp_path / "docs" / "ablations-results.md").read_text()
    # the main job: accuracy 0.8 and 1.0 -> mean 90%; tokens 50 and 100 -> mean 75
    row = next(x for x in text.splitlines() if x.startswith("| mirror descent") and "add4" in x)
    assert "90.0% (80%, 100%)" in row and "75.0 (50, 100)" in row
    assert f"| {75.0 / 0.9:.1f} |" in row  # tokens per correct answer: 75 / 0.9
    assert "Wall time per seed: 5.0 min, 5.0 min." in text
    # sampled tokens: 1000 per iteration -> 10k by iteration 10, 30k by 30
    assert "10 / 30, 10 / 30" in text and "5 / 15, 5 / 15" in text
    # long2short rl: tokens 50/100 = -50% and 80/80 = +0%, accuracy 90% and 70%
    l2s = next(x for x in text.splitlines() if x.startswith("| rl |"))
    assert "-25% (-50%, +0%)" in l2s and "80.0% (90%, 70%)" in l2s
    for png in ("ablation-fig5", "ablation-rest", "ablation-long2short"):
        assert (tmp_path / "docs" / "img" / f"{png}.png").stat().st_size > 1000
    x, y = report_ablations.train_vs_tokens(
        report_ablations.load_run(runs / "rest-seed0"), "train/acc/add4"
    )
    np.testing.assert_allclose(x, 500.0 * np.arange(1, 31))
