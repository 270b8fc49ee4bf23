"""The character tokenizer, and its tokenizer.json as read by transformers.AutoTokenizer."""

import transformers

from k15_jax.model.tokenizer import CharTokenizer, HFTokenizer

TEXT = "Compute 48+7.\nStep 1: 8+7=15, carry 1\n\\boxed{55} {x}"


def test_char_round_trip_and_specials():
    tok = CharTokenizer()
    ids = tok.encode(TEXT, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == len(TEXT) + 2
    assert tok.decode(ids) == TEXT
    assert tok.decode(tok.encode("ab") + [tok.eos_id] + tok.encode("cd")) == "ab"
    assert tok.encode("é") == [tok.unk_id]


def test_hf_tokenizer_json_matches_char_tokenizer(tmp_path):
    tok = CharTokenizer()
    tok.save_hf(tmp_path)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert auto(TEXT, add_special_tokens=False)["input_ids"] == tok.encode(TEXT)
    assert auto(TEXT)["input_ids"] == tok.encode(TEXT, bos=True)  # what the policy was fed
    assert auto.decode(tok.encode(TEXT)) == TEXT
    assert auto.eos_token_id == tok.eos_id and auto.pad_token_id == tok.pad_id
    ours = HFTokenizer(tmp_path)
    assert ours.encode(TEXT) == tok.encode(TEXT) and ours.decode(tok.encode(TEXT)) == TEXT
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
