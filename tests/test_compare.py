"""experiments.compare: groups runs by experiment, averages seeds, writes plot and table."""

import json

import numpy as np

from experiments import compare


def _fake_run(path, name, seed, start, end):
    path.mkdir(parents=True)
    bands = {"add1": 1.0, "add5": start}
    summary = {
        "experiment": name,
        "seed": seed,
        "hardest_band": "add5",
        "eval_accuracy_by_band": {"start": bands, "end": {"add1": 1.0, "add5": end}},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    recs = []
    for it in range(3):
        recs.append(
            {
                "phase": "rl",
                "iteration": it,
                "train/reward_mean": 0.1 * it + seed,
                "train/response_len": 40.0,
            }
        )
    for it, acc in ((0, start), (3, end)):
        recs.append({"phase": "eval", "iteration": it, "eval/acc/add5": acc})
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))


def test_compare_means_over_seeds(tmp_path, capsys):
    runs = []
    for seed, (s, e) in enumerate([(0.2, 0.6), (0.3, 0.8)]):
        runs.append(tmp_path / f"a{seed}")
        _fake_run(runs[-1], "curriculum", seed, s, e)
    runs.append(tmp_path / "b0")
    _fake_run(runs[-1], "uniform", 0, 0.2, 0.4)
    compare.main([str(r) for r in runs] + ["--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| curriculum | 2 |" in table and "25.0% -> 70.0%" in table
    assert "| uniform | 1 |" in table and "20.0% -> 40.0%" in table
    assert "+40, +50 pts" in table and "+20 pts" in table
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 1000
    x, mean, lo, hi = compare.group_curves(
        [compare.load_run(r) for r in runs[:2]], "rl", "train/reward_mean"
    )
    np.testing.assert_allclose(mean, [0.5, 0.6, 0.7])
    np.testing.assert_allclose(hi - lo, [1.0, 1.0, 1.0])
    x, mean, lo, hi = compare.group_changes(
        [compare.load_run(r) for r in runs[:2]], "eval/acc/add5"
    )
    np.testing.assert_allclose(x, [0, 3])
    np.testing.assert_allclose(mean, [0.0, 0.45])  # (0.6 - 0.2 + 0.8 - 0.3) / 2
    np.testing.assert_allclose(hi, [0.0, 0.5])
    assert "curriculum" in capsys.readouterr().out
