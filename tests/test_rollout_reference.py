"""Reference decoding used by the rollout tests: step-by-step argmax over `model.forward`.

The reference recomputes the full forward pass at every step (no KV cache, no slots, no
sampling code), so it shares nothing with the engine but the model's forward.
"""

import jax
import jax.numpy as jnp
import numpy as np

from k15_jax.model import ModelConfig, forward
from k15_jax.model.params import ParamSpec, param_specs
from k15_jax.rollout.repeat import first_repeat

TINY = ModelConfig(
    vocab_size=61,
    hidden_size=48,
    intermediate_size=80,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=12,
    qkv_bias=True,
    tie_embeddings=False,
)


def tiny_params(cfg: ModelConfig = TINY, seed: int = 0):
    """Random params with non-trivial norms and biases (every tensor matters).

    Drawn with numpy (compiling jax.random for every shape takes seconds on CPU).
    """
    rng = np.random.default_rng(seed)

    def draw(spec):
        base = {"ones": 1.0, "zeros": 0.0}.get(spec.init, 0.0)
        std = 1.0 / np.sqrt(spec.fan_in) if spec.init == "normal" else 0.1
        return jnp.asarray(base + std * rng.standard_normal(spec.shape), jnp.float32)

    return jax.tree.map(draw, param_specs(cfg), is_leaf=lambda x: isinstance(x, ParamSpec))


def greedy_reference(params, cfg, prompts, max_new, stop_ids=(), repeat=None):
    """Argmax decoding with a full forward per step.

    Returns, per prompt, (response tokens, log_softmax log-probs, finish) with finish in
    {"eos", "length", "repeat"}; repeat = (ngram, min_repeats, window) or None.
    """
    B = len(prompts)
    T = max(len(p) for p in prompts) + max_new
    buf = np.zeros((B, T), np.int32)
    cur = np.array([len(p) for p in prompts])
    for b, p in enumerate(prompts):
        buf[b, : len(p)] = p
    fwd = jax.jit(lambda t: jax.nn.log_softmax(forward(params, cfg, t), axis=-1))
    logps = [[] for _ in range(B)]
    for _ in range(max_new):
        lp = np.asarray(fwd(jnp.asarray(buf)))[np.arange(B), cur - 1]
        tok = lp.argmax(-1)
        for b in range(B):
            buf[b, cur[b]] = tok[b]
            logps[b].append(float(lp[b, tok[b]]))
        cur += 1
    out = []
    for b, p in enumerate(prompts):
        resp = buf[b, len(p) : len(p) + max_new].tolist()
        end, finish = max_new, "length"
        hits = [i + 1 for i, t in enumerate(resp) if t in stop_ids]
        if hits:
            end, finish = hits[0], "eos"
        if repeat is not None:
            r = first_repeat(resp[:end], *repeat)
            if r is not None and (finish != "eos" or r < end):
                end, finish = r, "repeat"
        out.append((resp[:end], logps[b][:end], finish))
    return out


def pick_stop_token(responses, min_step=2):
    """A token that ends some greedy responses early but not all (for eos tests)."""
    best = None
    for tok in range(TINY.vocab_size):
        firsts = [r.index(tok) for r in responses if tok in r[min_step:]]
        if 0 < len(firsts) < len(responses) and len(set(firsts)) > 1:
            if best is None or len(firsts) > best[1]:
                best = (tok, len(firsts))
    assert best is not None, "no suitable stop token in the reference responses"
    return best[0]


def test_reference_matches_kv_cache_decoding():
    """The reference agrees with the model's own prefill + decode_step argmax loop."""
    from k15_jax.model import decode_step, prefill

    params = tiny_params()
    prompts = [[5, 9, 3], [7], [4, 4, 8, 1, 2]]
    ref = greedy_reference(params, TINY, prompts, 6)
    prefill_fn = jax.jit(prefill, static_argnums=(1, 4))
    decode_fn = jax.jit(decode_step, static_argnums=1)
    for p, (resp, lps, finish) in zip(prompts, ref):
        tokens = jnp.asarray([p + [0] * (5 - len(p))])  # one padded shape: one compile
        logits, cache = prefill_fn(params, TINY, tokens, jnp.asarray([len(p)]), 16)
        got, got_lp = [], []
        for _ in range(6):
            lp = jax.nn.log_softmax(logits[0])
            t = int(jnp.argmax(lp))
            got.append(t)
            got_lp.append(float(lp[t]))
            logits, cache = decode_fn(params, TINY, jnp.asarray([t]), cache)
        assert got == resp and finish == "length"
        np.testing.assert_allclose(got_lp, lps, atol=1e-5)
