"""Imports JetStream 0.2.2 (archived, frozen) with current JAX and a light install.

Install: `pip install --no-deps -r requirements-nodeps.txt` (google-jetstream==0.2.2 without
its dependency list, which pulls TensorFlow through seqio). What JetStream then misses, and
what this shim does about it, only when the real module is absent:

- `seqio.vocabularies` (Vocabulary, SentencePieceVocabulary): imported by
  `jetstream.engine.token_utils` and `mock_utils` at import time, used only by JetStream's
  SentencePiece tokenizer and its test vocabulary. Stand-in: a `Vocabulary` base class and a
  `SentencePieceVocabulary` that raises if constructed (our engine brings its own tokenizer).
- `tiktoken` (+ `tiktoken.load`): imported by JetStream's Llama-3 tokenizer module, used
  only when that tokenizer is built. Stand-in: names that raise if used.
- `jax.tree_map`: removed from JAX, called by the orchestrator; aliased to `jax.tree.map`.

The orchestrator (`orchestrator()`) additionally needs grpcio and shortuuid (test
requirements). Its import sets the root logger to DEBUG with a stdout handler; we undo that.
Only this module and `jetstream_engine.py` import jetstream.
"""

import importlib
import importlib.util
import logging
import sys
import types

import jax

INSTALL_HINT = "pip install --no-deps -r requirements-nodeps.txt  (google-jetstream==0.2.2)"


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _unavailable(what: str, package: str):
    def fail(*args, **kwargs):
        raise ImportError(
            f"{what} needs the real `{package}` package, which is not installed (k15_jax "
            f"installs a stand-in for JetStream's imports only); pip install {package}"
        )

    return fail


def _seqio_standin() -> None:
    vocab = types.ModuleType("seqio.vocabularies")

    class Vocabulary:
        """Stand-in for seqio.vocabularies.Vocabulary (a base class only)."""

        def __init__(self, extra_ids: int = 0):
            self._extra_ids = extra_ids

    class SentencePieceVocabulary(Vocabulary):
        def __init__(self, *args, **kwargs):
            _unavailable("JetStream's SentencePiece tokenizer", "seqio")()

    vocab.Vocabulary = Vocabulary
    vocab.SentencePieceVocabulary = SentencePieceVocabulary
    seqio = types.ModuleType("seqio")
    seqio.vocabularies = vocab
    seqio.__k15_standin__ = True
    sys.modules["seqio"] = seqio
    sys.modules["seqio.vocabularies"] = vocab


def _tiktoken_standin() -> None:
    tk = types.ModuleType("tiktoken")
    tk.Encoding = _unavailable("JetStream's Llama-3 tokenizer", "tiktoken")
    tk.__k15_standin__ = True
    load = types.ModuleType("tiktoken.load")
    load.load_tiktoken_bpe = _unavailable("JetStream's Llama-3 tokenizer", "tiktoken")
    tk.load = load
    sys.modules["tiktoken"] = tk
    sys.modules["tiktoken.load"] = load


def install() -> None:
    """Installs the stand-ins and the jax.tree_map alias where needed (idempotent)."""
    if _missing("jetstream"):
        raise ImportError(f"JetStream is not installed; {INSTALL_HINT}")
    if _missing("seqio"):
        _seqio_standin()
    if _missing("tiktoken"):
        _tiktoken_standin()
    if not hasattr(jax, "tree_map"):
        jax.tree_map = jax.tree.map


def engine_api():
    """The `jetstream.engine.engine_api` module."""
    install()
    return importlib.import_module("jetstream.engine.engine_api")


def tokenizer_modules():
    """(tokenizer_api, tokenizer_pb2, token_utils) modules of jetstream.engine."""
    install()
    names = ("tokenizer_api", "tokenizer_pb2", "token_utils")
    return tuple(importlib.import_module(f"jetstream.engine.{n}") for n in names)


def orchestrator():
    """The `jetstream.core.orchestrator` module (needs grpcio and shortuuid)."""
    install()
    for pkg, pip_name in (("grpc", "grpcio"), ("shortuuid", "shortuuid")):
        if _missing(pkg):
            raise ImportError(f"JetStream's orchestrator needs {pip_name}; pip install {pip_name}")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    module = importlib.import_module("jetstream.core.orchestrator")
    root.setLevel(level)
    root.handlers[:] = handlers
    return module
