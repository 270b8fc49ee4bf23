"""The RL loop on a real-model shape: where an iteration's time goes.

    python -m experiments.bench_real [--iterations 3] [--layers 16] [--no-code]

Builds a random ~50M-parameter Qwen2 checkpoint (hidden 512, 16 layers) with a byte-level
BPE tokenizer trained on GSM8K text and Qwen2's chat template, then runs
`experiments.run +exp=math` on GSM8K rows mixed with the sandbox's code problems (when the
sandbox can run here), and reads the run's metrics. Prints one JSON object as its last
line: seconds per iteration split into rollout / reward / update / hand-over, rollout
tokens/s, and the share of the iteration spent in reward scoring (goal: under 10% with code
tasks in the mix), with the machine's load average.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def build_checkpoint(out: Path, layers: int) -> tuple[Path, int]:
    """A random Qwen2-shaped checkpoint (our init, exported as HF) with a real tokenizer."""
    import jax

    from k15_jax.model.config import ModelConfig
    from k15_jax.model.hf import export_hf
    from k15_jax.model.params import init_params
    from tests.real_model import QWEN2_CHAT_TEMPLATE, gsm8k_text, tokenizer_config, train_bpe

    tok = train_bpe(gsm8k_text())
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(QWEN2_CHAT_TEMPLATE)))
    cfg = ModelConfig(
        vocab_size=1024,
        hidden_size=512,
        intermediate_size=1408,
        num_layers=layers,
        num_heads=8,
        num_kv_heads=2,
        head_dim=64,
        qkv_bias=True,
        max_position_embeddings=1024,
        architecture="Qwen2ForCausalLM",
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    export_hf(init_params(cfg, jax.random.key(0)), cfg, out)
    return out, cfg.num_params


def code_rows(out: Path) -> Path | None:
    """The sandbox's example problems as code prompt rows, or None without a sandbox."""
    from k15_jax.sandbox.testgen import PROBLEMS_DIR

    if subprocess.run(["which", "bwrap"], capture_output=True).returncode:
        return None
    rows = [{"problem_dir": str(p)} for p in sorted(PROBLEMS_DIR.iterdir()) if p.is_dir()]
    path = out / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--no-code", action="store_true", help="math prompts only")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_real_"))
    hf, n_params = build_checkpoint(tmp / "ckpt", args.layers)
    train = [tmp / "gsm8k.jsonl"]
    train[0].write_text("\n".join((DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:256]))
    code = None if args.no_code else code_rows(tmp)
    if code is not None:
        train.append(code)
    run_dir = tmp / "run"
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "+exp=math",
        f"trainer.init_from_hf={hf}",
        "data.train=[{}]".format(",".join(map(str, train))),
        f"data.eval=[{train[0]}]",
        f"trainer.run_dir={run_dir}",
        f"trainer.iterations={args.iterations}",
        "trainer.eval_per_band=4",
        f"trainer.eval_every={args.iterations}",
        "sampler.batch_prompts=8",
        "sampler.samples_per_prompt=8",
        "rollout.max_prompt_len=256",
        "rollout.max_new_tokens=128",
        "rollout.slots=64",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the run failed:\n{proc.stderr[-4000:]}")
    rl = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rl if r.get("phase") == "rl"][1:]  # the first iteration compiles
    mean = lambda k: sum(r[k] for r in rl) / max(len(rl), 1)
    parts = {p: mean(f"time/{p}_s") for p in ("rollout", "reward", "update", "handover")}
    total = mean("time/iteration_s")
    out = {
        "model_params_m": round(n_params / 1e6, 1),
        "iterations_timed": len(rl),
        "seconds_per_iteration": round(total, 3),
        **{f"{p}_s": round(v, 3) for p, v in parts.items()},
        "rollout_tokens_per_s": round(mean("rollout/tokens_per_s"), 1),
        "reward_share": round(parts["reward"] / total, 4) if total else None,
        "reward_share_goal": 0.10,
        "reward_share_ok": bool(total and parts["reward"] / total < 0.10),
        "code_tasks": code is not None,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
