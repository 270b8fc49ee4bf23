"""Tokenizers: a Hugging Face `tokenizer.json` (tokenizers library) and a built-in
character tokenizer for the embedded synthetic tasks.

Both expose: encode(str) -> list[int], decode(list[int]) -> str, vocab_size, pad_id,
bos_id, eos_id. The character tokenizer can be written as a `tokenizer.json` so that
`transformers.AutoTokenizer` loads an exported policy on its own.
"""

import json
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHAR_ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


class CharTokenizer:
    """One id per character: specials first, then printable ASCII and newline."""

    def __init__(self, alphabet: str = CHAR_ALPHABET):
        self.itos = list(CHAR_SPECIALS) + list(alphabet)
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(c, self.unk_id) for c in text]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, *, skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < len(CHAR_SPECIALS):
                if i == self.eos_id and skip_special:
                    break
                if skip_special:
                    continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else "")
        return "".join(out)

    def to_hf(self) -> Tokenizer:
        """The same vocabulary as a `tokenizers.Tokenizer` (one token per character)."""
        tok = Tokenizer(models.WordLevel(vocab=dict(self.stoi), unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens(list(CHAR_SPECIALS))
        # the policy is trained on <bos> + prompt: tokenizing with special tokens adds it
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", self.bos_id)]
        )
        return tok

    def save_hf(self, directory: str | Path) -> None:
        """Writes tokenizer.json and tokenizer_config.json for transformers.AutoTokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.to_hf().save(str(directory / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "pad_token": "<pad>",
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "unk_token": "<unk>",
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


class HFTokenizer:
    """A Hugging Face tokenizer.json through the `tokenizers` library."""

    def __init__(self, path: str | Path, *, bos: str | None = None, eos: str | None = None):
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {file}; set model.tokenizer_path")
        self.tok = Tokenizer.from_file(str(file))
        cfg_file = file.parent / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}

        def special(name, given):
            tok = given or cfg.get(f"{name}_token")
            tok = tok.get("content") if isinstance(tok, dict) else tok
            return None if tok is None else self.tok.token_to_id(tok)

        self.bos_id, self.eos_id = special("bos", bos), special("eos", eos)
        pad = special("pad", None)
        self.pad_id = pad if pad is not None else (self.eos_id or 0)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, *, skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tok.decode(ids, skip_special_tokens=skip_special)
