"""Exact resume under partial rollouts with prefix sharing: a run SIGKILLed mid-iteration,
while its partial-rollout buffer holds unfinished trajectories of several versions, resumes
to the same metrics as an uninterrupted run."""

import pytest

from tests.loop_runs import records, run_main
from tests.test_loop import _kill_when

# budget 8 of 64 new tokens: long answers span several iterations (several versions)
PARTIAL = [
    "rollout.partial=true",
    "rollout.budget_tokens=8",
    "rollout.share_prefix=true",
    "trainer.iterations=4",
    "trainer.eval_every=4",
]


@pytest.mark.slow
def test_sigkill_with_a_multi_version_buffer_resumes_exactly(tmp_path):
    whole = tmp_path / "whole"
    run_main(whole, *PARTIAL)
    rl = [r for r in records(whole) if r["phase"] == "rl"]
    assert [r["iteration"] for r in rl] == [0, 1, 2, 3]
    # iterations 1 and 2 continue trajectories of earlier ones (prompt shared, response
    # extended) and leave unfinished ones: the buffer the killed run restarts from holds
    # trajectories with tokens of several versions
    for r in rl[1:3]:
        assert r["rollout/buffer_unfinished"] > 0
        assert r["rollout/trajectories_continued"] > 0 and r["rollout/extend_tokens"] > 0
    killed = tmp_path / "killed"
    _kill_when(
        run_main(killed, *PARTIAL, popen=True), killed / "metrics.jsonl", phase="rl", iteration=2
    )
    resumed = run_main(killed, *PARTIAL)
    assert "resumed from" in resumed.stderr
    assert records(killed) == records(whole)
