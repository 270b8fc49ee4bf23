"""User-set options of the code-execution sandbox service (report sections 2.3.5, 2.6.4)."""

import dataclasses


@dataclasses.dataclass
class SandboxConfig:
    """Options of `python -m k15_jax.sandbox serve` and of `start_sandbox`.

    Every field is also a command-line flag of `serve` (`--output-limit-mb 32`, ...).
    """

    host: str = "127.0.0.1"  # bind address; keep it on loopback, the API has no authentication
    port: int = 8765  # 0 picks a free port (printed on stdout as JSON)
    workers: int = 0  # concurrent sandboxed runs; 0 = os.cpu_count(); extra requests queue
    base_uid: int = 1_000_000  # slot i runs as uid/gid base_uid + i when the service is root
    bwrap_path: str = ""  # "" = `bwrap` on PATH
    python_path: str = ""  # interpreter used inside the sandbox; "" = auto (see docs/sandbox.md)
    cxx_path: str = ""  # "" = `g++` on PATH; C++ is disabled when none is found
    cxx_flags: str = "-O2 -std=gnu++17 -pipe"
    supervisor: str = "auto"  # in-sandbox supervisor: "c" (built at start-up), "python", "auto"
    default_time_limit_s: float = 2.0  # CPU seconds when a request names none
    default_memory_limit_mb: int = 256  # address-space limit when a request names none
    max_time_limit_s: float = 30.0  # largest time_limit_s a request may ask for
    max_memory_limit_mb: int = 4096  # largest memory_limit_mb a request may ask for
    min_memory_limit_mb: int = 16  # an interpreter cannot start below this
    wall_factor: float = 3.0  # wall limit = time_limit_s * wall_factor + wall_extra_s
    wall_extra_s: float = 1.0
    output_limit_mb: float = 64.0  # stdout (and, separately, stderr) cap; the run is killed past it
    stderr_keep_kb: int = 16  # how much stderr is returned
    work_dir_mb: int = 64  # size of each private tmpfs (/work and /tmp)
    nproc: int = 16  # processes + threads per run (RLIMIT_NPROC of the slot's uid)
    nofile: int = 64  # open files per process
    compile_time_limit_s: float = 30.0  # CPU seconds for one C++ compile
    compile_memory_limit_mb: int = 2048
    compile_nproc: int = 32
    binary_cache_size: int = 128  # compiled programs kept, keyed by source hash
    max_body_mb: float = 64.0  # largest request body accepted (413 above)
    max_cases: int = 1000  # largest number of cases in one /judge request
    read_timeout_s: float = 30.0  # a client that stalls mid-request gets 408 after this
    insecure: bool = False  # run without bubblewrap when it cannot start (UNSAFE: no isolation)
    parent_pid: int = 0  # exit when this process dies (set by start_sandbox)
