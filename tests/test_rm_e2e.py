"""Both reward models end to end. Fast: RM checkpoints of a tiny decoder saved and scored
through `reward.kind` in the RL reward step. Slow (a few minutes on a loaded 2-core CPU,
mostly compiles): the experiment trains and saves both RMs on a tiny setting and the reward
step scores through them; an RL run with the CoT RM logs its agreement with the rule."""

import json

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from k15_jax.config import register, validate
from k15_jax.model.config import ModelConfig
from k15_jax.model.params import init_params
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.rewards import rm_classic, rm_store
from k15_jax.rewards.math import score_math
from k15_jax.rewards.rm_data import rm_input
from k15_jax.rewards.score import RewardConfig, make_verifier, score
from tests.conftest import ROOT
from tests.loop_runs import run_main

TINY_RM = [
    "+exp=reward_models",
    "data.synthetic.bands=[add1,add2]",
    "data.synthetic.sft_band_weights=[1,1]",
    "sampler.hard_bands=[]",
    "sft.steps=4",
    "sft.rows=4",
    "reward_models.train_prompts_per_band=3",
    "reward_models.eval_prompts_per_band=2",
    "reward_models.samples_per_prompt=2",
    "reward_models.classic.steps=3",
    "reward_models.classic.batch=4",
    "reward_models.cot.steps=3",
    "reward_models.cot.rows=2",
    "rollout.slots=8",
    "reward.rm_batch=8",
]


def _compose(*overrides):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    from k15_jax.train.reward_models.job import main

    run_dir = tmp_path_factory.mktemp("rm")
    cfg = _compose(*TINY_RM, f"trainer.run_dir={run_dir}")
    validate(cfg)
    return main(cfg)


@pytest.mark.slow
def test_experiment_writes_table_results_and_checkpoints(rm_run):
    rm = rm_run / "rm"
    results = json.loads((rm / "results.json").read_text())
    for kind in ("classic_rm", "cot_rm"):
        r = results[kind]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["report_accuracy"] in (0.844, 0.985)
        assert (rm / kind / "rm.json").is_file() and (rm / kind / "params").is_dir()
    lines = [json.loads(x) for x in (rm / "pairs_eval.jsonl").read_text().splitlines()]
    labels = np.array([x["label"] for x in lines])
    assert len(lines) == results["data"]["eval_pairs"] and labels.mean() == 0.5
    # the table's accuracy is recomputed from the per-pair predictions
    pred = np.array([x["classic_p"] >= 0.5 for x in lines])
    assert results["classic_rm"]["accuracy"] == pytest.approx(float((pred == labels).mean()))
    assert "84.4%" in (rm / "table.md").read_text() and "98.5%" in (rm / "table.md").read_text()


QUESTIONS, REFS = ["2+3"] * 4, ["5"] * 4
RESPONSES = ["\\boxed{5}", "\\boxed{6}", "2+3+0=05\n\\boxed{5}", "x"]
# the rule verifier's verdicts on RESPONSES, by hand: boxed 5 right, boxed 6 wrong, no answer
RULE = np.array([[1, 0], [1, 0]], np.float32)


def rule_from_texts():
    """The rule verdicts recomputed from the raw texts (and checked against RULE)."""
    rule, _ = score_math(RESPONSES, REFS)
    np.testing.assert_array_equal(rule.reshape(2, 2), RULE)
    return RULE


def classic_probabilities(params, model_cfg):
    """The classic RM's P(correct) for RESPONSES, straight from its params (not via score)."""
    texts = [rm_input(q, r, y, 91) for q, r, y in zip(QUESTIONS, REFS, RESPONSES)]
    return rm_classic.probabilities(params, model_cfg, CharTokenizer(), texts, 92)


def score_responses(cfg: RewardConfig):
    """The reward step on RESPONSES as 2 groups of 2 (no repeats, length 3 each)."""
    lengths, repeated = np.full((2, 2), 3), np.zeros((2, 2), bool)
    verifier = make_verifier(cfg)
    return score(RESPONSES, REFS, lengths, repeated, cfg, 0, questions=QUESTIONS, verifier=verifier)


SMALL = ModelConfig(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    head_dim=16,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
)


@pytest.fixture(scope="module")
def small_rms(tmp_path_factory):
    """Untrained RM checkpoints of a small decoder, in the experiment's layout."""
    rm_dir = tmp_path_factory.mktemp("small") / "rm"
    decoder = init_params(SMALL, jax.random.key(0))
    head = rm_classic.init_head(SMALL, jax.random.key(1))
    rm_store.save(rm_dir, "classic_rm", {"decoder": decoder, "head": head}, SMALL, {})
    rm_store.save(rm_dir, "cot_rm", decoder, SMALL, {})
    return rm_dir, decoder, head


@pytest.mark.parametrize("kind", ["classic_rm", "cot_rm"])
def test_reward_kind_scores_through_a_saved_rm(small_rms, kind):
    rm_dir, decoder, head = small_rms
    cfg = RewardConfig(
        kind=kind, rm_dir=str(rm_dir), rm_batch=8, repeat_penalty=0.0, rm_max_check=16
    )
    rewards, correct, stats = score_responses(cfg)
    if kind == "classic_rm":  # the restored RM gives the saved params' probabilities
        want = classic_probabilities({"decoder": decoder, "head": head}, SMALL)
        np.testing.assert_allclose(rewards.reshape(-1), want, rtol=1e-5)
        np.testing.assert_array_equal(correct.reshape(-1), want >= 0.5)
        verdict = (want >= 0.5).reshape(2, 2)
    else:  # an untrained CoT RM writes no valid check: reward 0, counted malformed
        assert rewards.tolist() == [[0, 0], [0, 0]] and stats["reward/rm_malformed"] == 4
        verdict = np.zeros((2, 2), bool)
    # agreement of the independently derived RM verdicts with the rule's, from the raw texts
    rule = rule_from_texts()
    assert stats["reward/rm_agreement"] == pytest.approx(float((verdict == rule).mean()))
    assert stats["reward/rule_accuracy"] == 0.5


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classic_rm", "cot_rm"])
def test_reward_kind_scores_through_the_trained_rm(rm_run, kind):
    cfg = RewardConfig(kind=kind, rm_dir=str(rm_run / "rm"), rm_batch=8, repeat_penalty=0.0)
    rewards, correct, stats = score_responses(cfg)
    assert rewards.shape == (2, 2) and set(np.unique(correct)) <= {0.0, 1.0}
    assert np.all((rewards >= 0) & (rewards <= 1))
    if kind == "cot_rm":  # no penalties here: the reward is the CoT RM's verdict
        assert np.all(np.isin(rewards, [0.0, 1.0]))
        verdict = rewards >= 0.5
    else:  # recomputed from the trained checkpoint's params, not through score
        params, model_cfg, _ = rm_store.load(str(rm_run / "rm"), "classic_rm")
        verdict = (classic_probabilities(params, model_cfg) >= 0.5).reshape(2, 2)
    np.testing.assert_array_equal(correct, verdict)
    rule = rule_from_texts()
    assert stats["reward/rm_agreement"] == pytest.approx(float((verdict == rule).mean()))


def test_missing_or_wrong_checkpoint_is_a_clear_error(small_rms, tmp_path):
    with pytest.raises(ValueError, match="reward.rm_dir"):
        make_verifier(RewardConfig(kind="cot_rm"))
    with pytest.raises(FileNotFoundError, match="no cot_rm checkpoint"):
        make_verifier(RewardConfig(kind="cot_rm", rm_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="holds a classic_rm checkpoint"):
        rm_store.locate(small_rms[0] / "classic_rm", "cot_rm")
    with pytest.raises(ValueError, match="reward.rm_dir"):
        validate(_compose("+exp=curriculum", "reward.kind=cot_rm"))
    with pytest.raises(ValueError, match="reward.kind"):
        validate(_compose("+exp=curriculum", "reward.kind=llm"))


@pytest.mark.slow
def test_rl_run_with_cot_rm_logs_agreement(rm_run, tmp_path):
    run_main(
        tmp_path / "rl",
        "reward.kind=cot_rm",
        f"reward.rm_dir={rm_run / 'rm'}",
        "trainer.iterations=2",
        "trainer.eval_every=2",
        "reward.rm_batch=16",
    )
    rows = [json.loads(x) for x in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r.get("phase") == "rl"]
    assert len(rl) == 2 and all(0.0 <= r["reward/rm_agreement"] <= 1.0 for r in rl)
    for r in rl:  # agreement, RM accuracy and rule accuracy over the same responses are tied:
        # P(rm != rule) lies between |P(rm) - P(rule)| and min(P(rm) + P(rule), 2 - both)
        rm_acc, rule_acc, disagree = (
            r["train/accuracy"],
            r["reward/rule_accuracy"],
            1.0 - r["reward/rm_agreement"],
        )
        assert abs(rm_acc - rule_acc) - 1e-6 <= disagree
        assert disagree <= min(rm_acc + rule_acc, 2.0 - rm_acc - rule_acc) + 1e-6
