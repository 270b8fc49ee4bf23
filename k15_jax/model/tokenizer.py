"""Tokenizers: a Hugging Face `tokenizer.json` (tokenizers library) and a built-in
character tokenizer for the embedded synthetic tasks.

Both expose: encode(str) -> list[int], decode(list[int]) -> str, vocab_size, pad_id,
bos_id, eos_id. HFTokenizer adds stop_ids, chat_template, apply_chat_template and save_hf
(`load_tokenizer` reads a checkpoint folder). The character tokenizer can be written as a
`tokenizer.json` so that `transformers.AutoTokenizer` loads an exported policy on its own.
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


def _token_string(value) -> str | None:
    # tokenizer_config.json writes a special token as "<s>" or {"content": "<s>", ...}
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"malformed JSON in {path} line {e.lineno}: {e.msg}; fix the file"
        ) from None


def read_chat_template(folder: Path, cfg: dict) -> str | None:
    """chat_template.jinja (what transformers >= 4.50 saves) or tokenizer_config.json's
    `chat_template`: a string, or a list of {"name", "template"} of which "default"."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    t = cfg.get("chat_template")
    if isinstance(t, list):
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        if "default" not in named:
            raise ValueError(
                f"{folder / 'tokenizer_config.json'}: chat_template is a list without a "
                f"'default' entry (names: {sorted(map(str, named))}); name one 'default'"
            )
        t = named["default"]
    return t or None


def _eos_field(cfg: dict) -> list[int]:
    # generation_config.json / config.json: eos_token_id is an int, a list, or absent
    e = cfg.get("eos_token_id")
    return [int(x) for x in (e if isinstance(e, list) else [] if e is None else [e])]


def read_stop_ids(folder: Path, eos_id: int | None) -> tuple[int, ...]:
    """The tokenizer's EOS plus generation_config.json's and config.json's eos_token_id:
    chat checkpoints end a turn with a token other than the EOS (<|im_end|>, <|eot_id|>)."""
    ids = {eos_id} if eos_id is not None else set()
    ids.update(_eos_field(_read_json(folder / "generation_config.json")))
    ids.update(_eos_field(_read_json(folder / "config.json")))
    return tuple(sorted(ids))


class HFTokenizer:
    """A Hugging Face tokenizer folder: tokenizer.json through the `tokenizers` library,
    the special tokens and chat template of tokenizer_config.json, the stop ids of
    generation_config.json and config.json (see `load_tokenizer`)."""

    def __init__(self, path: str | Path, *, bos: str | None = None, eos: str | None = None):
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {file}; set model.tokenizer_path")
        self.tok = Tokenizer.from_file(str(file))
        folder = file.parent
        cfg = _read_json(folder / "tokenizer_config.json")
        self.special_tokens = {}  # {"bos_token": "<s>", ...}: what chat templates read
        for name in ("bos", "eos", "pad", "unk"):
            given = {"bos": bos, "eos": eos}.get(name)
            tok = given or _token_string(cfg.get(f"{name}_token"))
            if tok is not None:
                self.special_tokens[f"{name}_token"] = tok
        self.bos_id = self._special_id("bos", folder)
        self.eos_id = self._special_id("eos", folder)
        pad = self._special_id("pad", folder)
        self.pad_id = pad if pad is not None else (self.eos_id or 0)
        self.chat_template: str | None = read_chat_template(folder, cfg)
        self.stop_ids: tuple[int, ...] = read_stop_ids(folder, self.eos_id)

    def _special_id(self, name: str, folder: Path) -> int | None:
        tok = self.special_tokens.get(f"{name}_token")
        if tok is None:
            return None
        i = self.tok.token_to_id(tok)
        if i is None:
            raise ValueError(
                f"{folder / 'tokenizer_config.json'}: {name}_token {tok!r} is not in "
                f"{folder / 'tokenizer.json'}; set {name}_token to a token of the vocabulary"
            )
        return i

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, *, skip_special: bool = True) -> str:
        """Text of `ids`; with skip_special, cut at the first stop id, specials dropped."""
        ids = [int(i) for i in ids]
        if skip_special:
            stops = set(self.stop_ids)
            ids = ids[: next((k for k, i in enumerate(ids) if i in stops), len(ids))]
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as text, exactly as transformers' apply_chat_template(...,
        tokenize=False) renders it; ValueError without a template or when it fails."""
        from k15_jax.model.chat import render_chat

        return render_chat(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
        )

    def save_hf(self, directory: str | Path) -> None:
        """Writes tokenizer.json and tokenizer_config.json (special tokens, chat template)
        for transformers.AutoTokenizer, and generation_config.json's stop ids when the
        folder has none and they go beyond the EOS."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(directory / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **self.special_tokens,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000,
        }
        if self.chat_template:
            config["chat_template"] = self.chat_template
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        gen = directory / "generation_config.json"
        if not gen.exists() and set(self.stop_ids) - {self.eos_id}:
            gen.write_text(json.dumps({"eos_token_id": list(self.stop_ids)}, indent=2))


def load_tokenizer(hf_dir: str | Path) -> HFTokenizer:
    """The tokenizer of a Hugging Face checkpoint folder: tokenizer.json, the bos/eos/pad
    tokens and chat_template of tokenizer_config.json (or chat_template.jinja), and the
    stop ids (EOS, generation_config.json's and config.json's eos_token_id)."""
    folder = Path(hf_dir)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {folder}; point the path at a Hugging Face checkpoint "
            "folder (tokenizer.json, tokenizer_config.json)"
        )
    return HFTokenizer(folder)
