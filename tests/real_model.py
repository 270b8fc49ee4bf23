"""A tiny random Qwen2 checkpoint with a real BPE tokenizer, built inside the tests.

`build_real_model(out_dir)` writes a complete Hugging Face folder, as a downloaded chat
checkpoint has it: config.json + model.safetensors (a random `Qwen2ForCausalLM`, hidden 64,
2 layers, 4 heads, 2 kv heads, head_dim 16), generation_config.json (two stop ids),
tokenizer.json (byte-level BPE trained with the `tokenizers` library on GSM8K question and
answer text, ~1000 tokens, specials <|endoftext|>, <|im_start|>, <|im_end|>) and
tokenizer_config.json with Qwen2's published chat template. `real_model_dir()` builds it
once per test session in a temporary folder and returns that folder.

Uses torch and transformers (test-only dependencies); builds in a few seconds on 2 cores.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import shutil
import tempfile
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB_SIZE = 1000
TRAIN_ROWS = 3000

# Qwen2-7B-Instruct's chat template as published in its tokenizer_config.json.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation, spaces).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TINY_QWEN2 = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def gsm8k_text(path: Path = GSM8K_TRAIN, rows: int = TRAIN_ROWS) -> list[str]:
    """Question and answer text of the first `rows` GSM8K training rows."""
    if not path.is_file():
        raise FileNotFoundError(f"GSM8K training data not found at {path} (../shared/data)")
    with path.open(encoding="utf-8") as f:
        objs = [json.loads(line) for line in itertools.islice(f, rows)]
    return [o["question"] + "\n" + o["answer"] for o in objs]


def train_bpe(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE shaped like Qwen2's (NFC, regex split, byte-level), specials first."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_config(chat_template: str = QWEN2_CHAT_TEMPLATE) -> dict:
    """tokenizer_config.json as Qwen2-Instruct has it: no BOS, EOS <|im_end|>."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": True},
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }


def build_real_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Writes the checkpoint folder (see module docstring) to `out_dir`; returns it."""
    import torch
    import transformers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(gsm8k_text())
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2))
    endoftext, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    torch.manual_seed(seed)
    config = transformers.Qwen2Config(
        vocab_size=tok.get_vocab_size() + 24,  # padded past the tokenizer, as real ones are
        bos_token_id=endoftext,
        eos_token_id=im_end,
        **TINY_QWEN2,
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = [im_end, endoftext]
    model.generation_config.pad_token_id = endoftext
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@functools.cache
def real_model_dir() -> Path:
    """The checkpoint folder, built once per test session in a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="k15_real_model_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return build_real_model(tmp / "qwen2-tiny")
