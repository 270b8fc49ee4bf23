"""Secure code-execution sandbox service and CYaRon test-case generation (sections 2.3.5, 2.6.4).

Reward code uses `SandboxClient(url).judge(...)["pass_fraction"]`; the trainer wraps
training in `with start_sandbox(workers=...) as client:` when code tasks are configured.
See docs/sandbox.md.
"""

from k15_jax.sandbox.client import SandboxClient, SandboxError, start_sandbox
from k15_jax.sandbox.config import SandboxConfig
from k15_jax.sandbox.toolchain import SandboxUnavailable

__all__ = ["SandboxClient", "SandboxConfig", "SandboxError", "SandboxUnavailable", "start_sandbox"]
