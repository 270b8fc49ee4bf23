"""k15-jax: the Kimi k1.5 RL recipe in JAX (README.md)."""

from k15_jax.libtpu_guard import keep_libtpu_unloaded

keep_libtpu_unloaded()  # before any backend starts (libtpu is for k15_jax.aot only)
