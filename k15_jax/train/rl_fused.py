"""The RL update of one iteration as one compiled program (report sec. 2.3.2).

The plain form is two programs: a reference pass (log pi_theta_i of the sampled tokens under
the params at the start of the iteration) and `rl_step.make_update`'s M optimizer steps. But
at the first of the M steps the params *are* pi_theta_i, so that step's forward already
computes the reference log-probs: here it is run once, with `jax.vjp`, and serves both

    logp_0, vjp = vjp(token_logprobs, params)         the one forward at theta_i  [N, T]
    ref = logp_0                                        (algo.trainer_ref_logp)
    weights = algo.off_policy(mask, logp_0, rollout)    needs log pi_theta_i first
    grads_0 = vjp(d loss(logp_0, ref, weights) / d logp_0)
    steps 1..M-1 = rl_step.scan_steps                   the plain form's compiled body

so an iteration costs M forward+backward passes instead of M + 1 forwards and M backwards.
Everything stays on device: the fresh Adam state is made inside the program, the off-policy
weights too, and the host reads the results once (`iteration.update`). With no counted token
(weight mean 0) a `lax.cond` skips the steps and returns the params unchanged, as the plain
form's host-side check did.

The same math as the plain form; where XLA fuses the peeled first step differently from the
scan body the float results may differ in the last bits (tests/test_rl_fused.py compares).
Gradient accumulation (algo.microbatches > 1) keeps the plain form: a whole-batch vjp
would hold the activations of all rows at once, which is what micro-batching avoids.
"""

import jax
import jax.numpy as jnp

from k15_jax.model.config import ModelConfig
from k15_jax.model.logprobs import token_logprobs
from k15_jax.rl import off_policy
from k15_jax.rl.config import AlgoConfig
from k15_jax.train import rl_step


def supported(cfg: AlgoConfig) -> bool:
    """Whether `make_fused_update` runs this algo (else the plain two-program form)."""
    return cfg.microbatches == 1


def first_step(cfg: AlgoConfig, optimizer, params, vjp, logp, ref, rewards, weights):
    """The first of the M steps from the shared forward: logp = log pi_theta_i [N, T] and its
    `jax.vjp`; ref, weights [N, T]; rewards [B, K]. Returns (params, opt_state, metrics)."""
    loss_of_logp = rl_step.make_loss_of_logp(cfg)
    # the reference is a constant of the loss (as in the plain form, where it is an input)
    (loss, metrics), g = jax.value_and_grad(loss_of_logp, has_aux=True)(
        logp, jax.lax.stop_gradient(ref), rewards, weights
    )
    (grads,) = vjp(g)
    opt_state = optimizer.init(params)  # fresh moments every iteration (sec. 2.3.2)
    return rl_step.apply_step(optimizer, params, opt_state, loss, metrics, grads)


def make_fused_update(model_cfg: ModelConfig, cfg: AlgoConfig):
    """Jitted (params, tokens, rollout_logp, version, rewards, mask, iteration, images=None)
    -> (params, trainer_logp [N, T], off-policy metrics, step metrics).

    tokens, rollout_logp, version, mask: [N, T] (N = B*K); rewards [B, K]; images
    [N, M, P, C] or None; iteration: this iteration's number (traced: no retrace from one
    iteration to the next). The step metrics are `rl_step.make_update`'s, all zero where the
    weight mean is 0 (no step was taken; the caller drops them). Nothing is donated: callers
    (long2short) may keep the params they pass.
    """
    if not supported(cfg):
        raise ValueError("make_fused_update: algo.microbatches > 1 runs the plain update")
    optimizer = rl_step.make_optimizer(cfg)
    value_and_grad = rl_step.make_value_and_grad(model_cfg, cfg)
    M = cfg.updates_per_iteration

    @jax.jit
    def update(params, tokens, rollout_logp, version, rewards, mask, iteration, images=None):
        forward = lambda p: token_logprobs(p, model_cfg, tokens, images=images)
        logp, vjp = jax.vjp(forward, params)
        weights, weight_metrics = off_policy.token_weights(
            cfg.off_policy, mask, logp, rollout_logp, version, iteration, cfg.importance
        )
        ref = logp if cfg.trainer_ref_logp else rollout_logp

        def run(params):
            p, opt_state, first = first_step(
                cfg, optimizer, params, vjp, logp, ref, rewards, weights
            )
            last = first
            if M > 1:
                batch = (tokens, ref, rewards, weights, images)
                p, _, stacked = rl_step.scan_steps(
                    value_and_grad, optimizer, p, opt_state, batch, M - 1
                )
                last = jax.tree.map(lambda v: v[-1], stacked)
            return p, rl_step.step_metrics(first, last)

        def skip(params):  # no counted token: no step (the plain form's host-side check)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(run, params))
            return params, zeros[1]

        params, metrics = jax.lax.cond(
            weight_metrics["offpolicy/weight_mean"] > 0, run, skip, params
        )
        return params, logp, weight_metrics, metrics

    return update
