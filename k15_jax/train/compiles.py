"""Counting XLA compilations (a recompile between steps of the same shapes is a bug)."""

import contextlib

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Yields a list whose one entry is the number of backend compilations so far inside the
    block (in-memory cache hits do not compile, so they do not count)."""
    n = [0]

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == _EVENT:
            n[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield n
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
