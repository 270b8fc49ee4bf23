"""Token sampling: temperature, top-k, top-p, greedy; per-sample PRNG keys; policy log-probs.

Letters: S slots (rows), V vocab.

Keys: each trajectory owns a base key derived from (call key, request id, sample index); the
key of its t-th response token is fold_in(base key, t). A token therefore does not depend
on which slot, chunk or iteration (partial rollouts) produced it.
"""

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """The sampling distribution; hashable, so a static argument of the jitted step."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False

    @classmethod
    def from_config(cls, cfg) -> "SamplingParams":
        return cls(float(cfg.temperature), float(cfg.top_p), int(cfg.top_k), bool(cfg.greedy))


def filtered_logits(logits: jax.Array, sp: SamplingParams) -> jax.Array:
    """Unnormalised log-probs of the sampling distribution. logits [S, V] f32 -> [S, V].

    logits / temperature; then top-k keeps the k largest (ties at the k-th value are kept);
    then top-p keeps the smallest prefix of the descending-probability order whose mass
    reaches top_p (the token that crosses top_p is kept). Removed tokens get -inf.
    """
    x = logits.astype(jnp.float32) / sp.temperature
    V = x.shape[-1]
    if 0 < sp.top_k < V:
        kth = jax.lax.top_k(x, sp.top_k)[0][..., -1:]
        x = jnp.where(x >= kth, x, _NEG_INF)
    if sp.top_p < 1.0:
        x = jnp.where(top_p_mask(x, sp.top_p), x, _NEG_INF)
    return x


def _order_key(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (-inf lowest; NaN not expected)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def top_p_mask(x: jax.Array, top_p: float) -> jax.Array:
    """Nucleus of each row: x [S, V] f32 (-inf allowed) -> keep [S, V] bool.

    The rule of a descending sort: token i is kept iff the mass of the tokens before it in
    the descending order (ties by index) is < top_p. Without sorting: the nucleus is every
    token above a threshold u* plus, among the tokens at u*, the first by index while the
    mass stays below top_p; u* = the smallest value whose mass strictly above it is < top_p,
    found by bisection over the 2^32 order-preserving keys of float32 (32 passes over the
    row). A sort of [S, V] costs far more on CPU (it was ~3x the model's decode step for the
    28M bench model, vocab 8192, `docs/performance.md`). Decisions can differ from a sorted
    cumsum only where the mass before a token is within rounding of top_p.
    """
    p = jax.nn.softmax(x, axis=-1)
    key = _order_key(x)

    def above(u):  # mass of the tokens above u, per row
        return jnp.sum(jnp.where(key > u[:, None], p, 0.0), axis=-1)

    def halve(_, lo_hi):
        lo, hi = lo_hi  # invariant: above(hi) < top_p; the answer lies in [lo, hi]
        mid = lo + (hi - lo) // 2
        ok = above(mid) < top_p
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    lo = jnp.zeros(x.shape[:1], jnp.uint32)
    _, u = jax.lax.fori_loop(0, 32, halve, (lo, jnp.max(key, axis=-1)))
    tied = key == u[:, None]
    tied_before = jnp.cumsum(jnp.where(tied, p, 0.0), axis=-1) - jnp.where(tied, p, 0.0)
    return (key > u[:, None]) | (tied & (above(u)[:, None] + tied_before < top_p))


def first_argmax(x: jax.Array) -> jax.Array:
    """`jnp.argmax(x, axis=-1)` as int32, the same index (the first maximum; the first NaN
    when a row has one), from two plain reductions: a max, then the smallest index holding
    it. XLA's CPU argmax is one two-operand reduction that does not vectorise: 0.55 ms
    against 0.12 ms for [32, 8192] float32, run once or twice per decode step."""
    m = jnp.max(x, axis=-1, keepdims=True)
    hit = (x == m) | jnp.isnan(x)
    idx = jnp.arange(x.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(hit, idx, x.shape[-1]), axis=-1)


def sample_tokens(logits: jax.Array, keys: jax.Array, sp: SamplingParams) -> jax.Array:
    """One token per row. logits [S, V] f32, keys [S] (typed PRNG keys) -> tokens [S] int32.

    Sampling is `jax.random.categorical` per row (Gumbel-max: the argmax of the filtered
    logits plus Gumbel noise drawn from the row's key), with its argmax as `first_argmax`.
    """
    if sp.greedy:
        return first_argmax(logits)
    x = filtered_logits(logits, sp)
    noise = jax.vmap(lambda k: jax.random.gumbel(k, x.shape[-1:], x.dtype))(keys)
    return first_argmax(x + noise)


def policy_logp(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log pi(token) = log_softmax(raw logits)[token] at temperature 1. [S, V], [S] -> [S].

    This is the log-prob the RL loss needs (pi_theta_i of the sampled token), not the
    log-prob under the temperature / top-p filtered sampling distribution.
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0] - lse


def request_hash(request_id: str) -> int:
    """A stable 31-bit integer for a request id (Python's hash() is salted per process)."""
    return zlib.crc32(request_id.encode("utf-8")) & 0x7FFFFFFF


def as_typed_key(key) -> jax.Array:
    """Accepts a typed key (jax.random.key) or a raw uint32 key (jax.random.PRNGKey)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))


@jax.jit
def _trajectory_keys(key, hashes, samples):
    fold = lambda h, s: jax.random.key_data(jax.random.fold_in(jax.random.fold_in(key, h), s))
    return jax.vmap(fold)(hashes, samples)


def key_width() -> int:
    """uint32 words of key data of the default PRNG implementation (2 for threefry)."""
    return jax.random.key_data(jax.random.key(0)).shape[-1]


def trajectory_keys(key, request_ids: list[str], sample_indices: list[int]) -> np.ndarray:
    """Base key data [M, key_width()] uint32 of each (request id, sample index) under `key`."""
    if not request_ids:
        return np.zeros((0, key_width()), np.uint32)
    M = len(request_ids)
    size = 1 << (M - 1).bit_length()  # power-of-two bucket: few compiles
    hashes = np.zeros((size,), np.int32)
    samples = np.zeros((size,), np.int32)
    hashes[:M] = [request_hash(r) for r in request_ids]
    samples[:M] = sample_indices
    return np.asarray(_trajectory_keys(as_typed_key(key), hashes, samples))[:M]


def step_keys(key_data: jax.Array, positions: jax.Array) -> jax.Array:
    """Keys of the next token of each row: fold_in(base key, response position).

    key_data [S, key_width()] uint32, positions [S] int32 -> typed keys [S].
    """
    base = jax.random.wrap_key_data(key_data)
    return jax.vmap(jax.random.fold_in)(base, positions)
