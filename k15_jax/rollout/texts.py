"""From collected rollouts to response texts: the one place that orders the driver's groups
back into request order and decodes each response for the verifier.

`driver.collect` returns groups in completion order with their request ids; callers that
need request order (evaluation, long2short sampling, reward-model data) use `request_rows`.
Request ids are opaque here: nothing parses them.
"""

import numpy as np

from k15_jax.data.templates import response_text


def request_rows(group_ids: list, request_ids: list, k: int) -> np.ndarray:
    """Rollout row indices [len(request_ids) * k]: request r's K samples, in request order."""
    where = {g: n for n, g in enumerate(group_ids)}
    missing = [r for r in request_ids if r not in where]
    if missing:
        raise KeyError(f"requests {missing[:3]} have no returned group (still in the buffer?)")
    return np.concatenate([np.arange(k) + k * where[r] for r in request_ids]).astype(np.int64)


def response_texts(rollouts, rows, tokenizer, template) -> list[str]:
    """Decoded response of each row (prompt excluded, decoding stops at EOS), with the
    template's response prefix put back: exactly what the verifier scores."""
    tokens, plen, length = (
        np.asarray(x) for x in (rollouts.tokens, rollouts.prompt_len, rollouts.length)
    )
    return [
        response_text(template, tokenizer.decode(tokens[n, plen[n] : plen[n] + length[n]]))
        for n in rows
    ]
