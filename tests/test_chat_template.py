"""Our chat-template renderer and tokenizer loader against transformers' own.

The reference is `transformers.AutoTokenizer.from_pretrained(dir).apply_chat_template`
on the same folder: the prompt text and the token ids must be identical, for the tiny
Qwen2 checkpoint of tests/real_model.py (a real byte-level BPE), a Llama-3 style and a
Qwen2.5 style template (typed in from their published forms), with and without a
system message.
"""

import json
import shutil

import pytest
import transformers
from tokenizers import AddedToken, Tokenizer

from k15_jax.data.loaders import Task
from k15_jax.data.templates import CHAT_TEMPLATES, chat_prompt, code_from_response
from k15_jax.eval.checkpoint import chat_wrapper, eos_ids
from k15_jax.model.tokenizer import CharTokenizer, load_tokenizer
from tests.real_model import real_model_dir

# Meta-Llama-3-8B-Instruct's chat template as published in its tokenizer_config.json.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>")
LLAMA3_SPECIALS += ("<|end_header_id|>", "<|eot_id|>")

# Qwen2.5-Instruct's template (the tools branch included: it exercises tojson and `-`
# whitespace control), typed in from its tokenizer_config.json.
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501 (the published template, verbatim)

# Every helper transformers gives templates: namespace, loop controls, tojson (no HTML
# escaping), dict, strftime_now, raise_exception (not reached here).
FEATURES_TEMPLATE = """{% set ns = namespace(n=0) %}
{% for m in messages %}
  {% if m.role == 'system' %}{% continue %}{% endif %}
  {% set ns.n = ns.n + 1 %}
  [{{ ns.n }}] {{ m | tojson }} {{ dict(a=1) | tojson }}
  {% if m.role not in ['user', 'assistant', 'system'] %}{{ raise_exception('bad role') }}{% endif %}
{% endfor %}
year {{ strftime_now('%Y') }}{% if add_generation_prompt %}<|im_start|>{% endif %}"""


def _gsm8k_questions(shared_data, n=2):
    with (shared_data / "gsm8k" / "test.jsonl").open() as f:
        return [json.loads(next(f))["question"] for _ in range(n)]


def _conversations(shared_data):
    q1, q2 = _gsm8k_questions(shared_data)
    user = [{"role": "user", "content": q1}]
    tricky = "  Compute \\frac{1}{2} + é <b>&</b> {{ x }}\n  "  # jinja syntax is data here
    system = [
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": q2},
        {"role": "assistant", "content": "\\boxed{3}"},
        {"role": "user", "content": tricky},
    ]
    return {"user": user, "system": system}


def _with_template(tmp_path, template, specials=(), **config):
    """A copy of the real model's tokenizer with extra specials and another template."""
    tok = Tokenizer.from_file(str(real_model_dir() / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tmp_path.mkdir(parents=True, exist_ok=True)
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template, **config}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tmp_path


def _ids(out):
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _assert_same_as_transformers(folder, conversations):
    ours = load_tokenizer(folder)
    ref = transformers.AutoTokenizer.from_pretrained(str(folder))
    for name, msgs in conversations.items():
        for gen in (True, False):
            text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            ids = _ids(ref.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen))
            assert ours.apply_chat_template(msgs, add_generation_prompt=gen) == text, name
            assert ours.encode(ours.apply_chat_template(msgs, gen)) == ids, name
    return ours, ref


def test_real_model_qwen2_template_matches_transformers(shared_data):
    ours, ref = _assert_same_as_transformers(real_model_dir(), _conversations(shared_data))
    assert ours.chat_template == ref.chat_template
    assert (ours.eos_id, ours.pad_id, ours.bos_id) == (
        ref.eos_token_id,
        ref.pad_token_id,
        ref.bos_token_id,
    )
    text = ours.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")


def test_llama3_template_matches_transformers(tmp_path, shared_data):
    folder = _with_template(
        tmp_path,
        LLAMA3_TEMPLATE,
        LLAMA3_SPECIALS,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
    )
    ours, _ = _assert_same_as_transformers(folder, _conversations(shared_data))
    ids = ours.encode(ours.apply_chat_template(_conversations(shared_data)["user"]))
    assert ids[0] == ours.bos_id and ids.count(ours.bos_id) == 1  # the template writes BOS


def test_qwen25_and_helper_templates_match_transformers(tmp_path, shared_data):
    convs = _conversations(shared_data)
    _assert_same_as_transformers(_with_template(tmp_path / "q", QWEN25_TEMPLATE), convs)
    _assert_same_as_transformers(_with_template(tmp_path / "f", FEATURES_TEMPLATE), convs)


def test_failing_template_raises_with_the_jinja_error(tmp_path):
    msgs = [{"role": "user", "content": "x"}]
    bad = (
        "{% if messages[1] is undefined %}{{ raise_exception('roles must alternate') }}{% endif %}"
    )
    with pytest.raises(ValueError, match="roles must alternate"):
        load_tokenizer(_with_template(tmp_path / "a", bad)).apply_chat_template(msgs)
    with pytest.raises(ValueError, match="does not compile.*endfor"):
        load_tokenizer(
            _with_template(tmp_path / "b", "{% for m in messages %}")
        ).apply_chat_template(msgs)
    with pytest.raises(ValueError, match="no chat_template"):
        load_tokenizer(_with_template(tmp_path / "c", None)).apply_chat_template(msgs)
    with pytest.raises(ValueError, match="unsafe|SecurityError"):
        sandboxed = "{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}"
        load_tokenizer(_with_template(tmp_path / "d", sandboxed)).apply_chat_template(msgs)


def test_stop_ids_come_from_generation_config_and_config(tmp_path):
    real = real_model_dir()
    vocab = json.loads((real / "tokenizer.json").read_text())["model"]["vocab"]
    gen = json.loads((real / "generation_config.json").read_text())["eos_token_id"]
    tok = load_tokenizer(real)
    assert sorted(gen) == sorted([vocab["<|im_end|>"], vocab["<|endoftext|>"]])
    assert tok.stop_ids == tuple(sorted(gen)) and tok.eos_id == vocab["<|im_end|>"]
    # config.json's eos_token_id counts too, and an int in generation_config is fine
    folder = shutil.copytree(real, tmp_path / "m")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    (folder / "config.json").write_text(json.dumps({"eos_token_id": [7, 8]}))
    assert load_tokenizer(folder).stop_ids == tuple(sorted({5, 7, 8, vocab["<|im_end|>"]}))
    # decoding stops at the first stop id, whichever it is
    ids = tok.encode("12 apples") + [vocab["<|endoftext|>"]] + tok.encode("more")
    assert tok.decode(ids) == "12 apples"


def test_save_hf_loads_in_transformers(tmp_path, shared_data):
    tok = load_tokenizer(real_model_dir())
    tok.save_hf(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    msgs = _conversations(shared_data)["system"]
    text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == tok.apply_chat_template(msgs)
    assert ref.eos_token == "<|im_end|>" and ref.pad_token == "<|endoftext|>"
    assert load_tokenizer(tmp_path).stop_ids == tok.stop_ids  # via generation_config.json


def test_chat_wrapper_uses_the_template_and_reports_bos(tmp_path, shared_data):
    q = _gsm8k_questions(shared_data, 1)[0]
    ref = transformers.AutoTokenizer.from_pretrained(str(real_model_dir()))
    wrap, bos = chat_wrapper(real_model_dir())
    msgs = [{"role": "user", "content": q}]
    assert wrap(q) == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert bos is True  # Qwen2 has no BOS in its template (nor a BOS token)
    llama = _with_template(
        tmp_path, LLAMA3_TEMPLATE, LLAMA3_SPECIALS, bos_token="<|begin_of_text|>"
    )
    assert chat_wrapper(llama)[1] is False  # the template writes BOS itself


def test_eos_ids_include_the_stop_ids():
    tok = load_tokenizer(real_model_dir())

    class Model:
        eos_token_id = None

    assert eos_ids(Model(), tok, real_model_dir()) == tok.stop_ids


# ------------------------------------------------------------------ task prompts


def _tasks(shared_data):
    from k15_jax.data.sources import SourceConfig, load_source

    math = load_source(SourceConfig(str(shared_data / "math500" / "test.jsonl"), limit=2))
    code = Task("code:1", "Print the sum of two integers.", "", meta={"kind": "code", "tests": []})
    return math + [code]


def _reference_ids(ref, user_text):
    msgs = [{"role": "user", "content": user_text}]
    return _ids(ref.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))


@pytest.mark.parametrize("style", ["qwen2", "llama3"])
def test_chat_prompt_equals_transformers_token_for_token(tmp_path, shared_data, style):
    folder = real_model_dir()
    if style == "llama3":
        folder = _with_template(
            tmp_path, LLAMA3_TEMPLATE, LLAMA3_SPECIALS, bos_token="<|begin_of_text|>"
        )
    tok, ref = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    for task in _tasks(shared_data):
        kind = task.meta["kind"]
        ids = chat_prompt(tok, "chat", task)
        # the user turn, written out here independently of the template table
        if kind == "math":
            want = task.prompt + "\n\nPlease reason step by step, and put your final answer"
            assert ids == _reference_ids(ref, want + " within \\boxed{}.")
        else:
            text = ref.decode(ids)
            assert "```python" in text and task.prompt in text
            assert ids == _reference_ids(
                ref, CHAT_TEMPLATES["chat"]["code"].format.replace("{prompt}", task.prompt)
            )
        assert ids.count(tok.bos_id) == (1 if style == "llama3" else 0)
    # a response prefix follows the opened assistant turn
    direct = chat_prompt(tok, "direct", _tasks(shared_data)[0])
    assert tok.decode(direct, skip_special=False).endswith("assistant\n\\boxed{") or (
        tok.decode(direct, skip_special=False).endswith("<|end_header_id|>\n\n\\boxed{")
    )


def test_chat_prompt_errors(shared_data):
    task = _tasks(shared_data)[-1]
    with pytest.raises(ValueError, match="no form for code tasks"):
        chat_prompt(load_tokenizer(real_model_dir()), "long_cot", task)
    with pytest.raises(ValueError, match="chat_template"):
        chat_prompt(CharTokenizer(), "chat", task)


def test_code_from_response_takes_the_last_closed_block():
    text = (
        "First try:\n```python\nprint(1)\n```\nBetter:\n```py\nn = int(input())\n"
        "print(n * 2)\n```\nDone. ```python\nunfinished"
    )
    assert code_from_response(text) == "n = int(input())\nprint(n * 2)\n"
    assert code_from_response("```\nx = 1\n```") == "x = 1\n"
    assert code_from_response("no code here") is None
    assert code_from_response("```python\nprint(1)") is None  # truncated: no program
    assert code_from_response("```python\n  \n```") is None
