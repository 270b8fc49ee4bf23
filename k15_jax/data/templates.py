"""Prompt templates: raw problem text -> model input, as config.

`format` holds the literal placeholder `{prompt}` (substituted by plain replacement, so
LaTeX braces in the template or the problem need no escaping). `response_prefix` is
text the model input ends with that belongs to the answer (a prefill such as
`\\boxed{`); the verifier must see it, so score `response_text(t, completion)`.
"""

from __future__ import annotations

import dataclasses
import re

PLACEHOLDER = "{prompt}"

LONG_COT_FORMAT = (
    "Problem:\n{prompt}\n\n"
    "Reason step by step, then write the final answer as \\boxed{...} at the end.\n\n"
    "Solution:\n"
)
DIRECT_FORMAT = "Problem:\n{prompt}\n\nGive only the final answer, with no reasoning.\n\nAnswer: "
# The synthetic suite's tiny character-level models: the problem, then the worked steps.
COMPACT_FORMAT = "{prompt}\n"


@dataclasses.dataclass
class PromptTemplate:
    """How a problem becomes model input (see module docstring)."""

    format: str = LONG_COT_FORMAT
    response_prefix: str = ""


def template(name: str) -> PromptTemplate:
    """A fresh copy of a named preset (see TEMPLATES)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose from {sorted(TEMPLATES)}")
    return dataclasses.replace(TEMPLATES[name])


def render(t: PromptTemplate, prompt: str) -> str:
    """Model input for one problem: the format with `{prompt}` filled, then the prefix."""
    if PLACEHOLDER not in t.format:
        raise ValueError(f"prompt template format has no {PLACEHOLDER} placeholder: {t.format!r}")
    return t.format.replace(PLACEHOLDER, prompt) + t.response_prefix


def response_text(t: PromptTemplate, completion: str) -> str:
    """What the verifier scores: the prefilled part of the answer, then the generation."""
    return t.response_prefix + completion


TEMPLATES = {
    # long chain of thought, final answer in \boxed{} (what the k1.5 recipe trains)
    "long_cot": PromptTemplate(LONG_COT_FORMAT),
    # answer at once, no reasoning: curation's "solvable without reasoning" probe
    "direct": PromptTemplate(DIRECT_FORMAT, response_prefix="\\boxed{"),
    # synthetic suite: problem line, then worked steps ending in \boxed{}
    "compact": PromptTemplate(COMPACT_FORMAT),
    # synthetic suite, answer at once
    "compact_direct": PromptTemplate(COMPACT_FORMAT, response_prefix="\\boxed{"),
}


# ----------------------------------------------------------------------------- chat

# The user turn of a chat model, per task kind. The math wording is the one Qwen2.5-Math
# and DeepSeek-R1 were trained to follow; the code wording asks for one fenced block,
# which `code_from_response` extracts for the sandbox.
CHAT_MATH_FORMAT = (
    "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
)
CHAT_CODE_FORMAT = (
    "{prompt}\n\nWrite a complete Python 3 program that reads standard input and writes "
    "standard output. Reason step by step, then answer with one fenced code block:\n"
    "```python\n...\n```"
)
CHAT_TEMPLATES = {
    # long chain of thought: \boxed{} answer for math, one ```python block for code
    "chat": {"math": PromptTemplate(CHAT_MATH_FORMAT), "code": PromptTemplate(CHAT_CODE_FORMAT)},
    # the problem alone as the user turn (a checkpoint's own system prompt does the rest)
    "chat_raw": {"math": PromptTemplate("{prompt}"), "code": PromptTemplate("{prompt}")},
}


def kind_template(name: str, kind: str, *, key: str = "data.template") -> PromptTemplate:
    """The template `name` for a task kind ("math" | "code"): a CHAT_TEMPLATES entry, or
    for math any TEMPLATES preset (its text becomes the user turn)."""
    if name in CHAT_TEMPLATES:
        forms = CHAT_TEMPLATES[name]
        if kind not in forms:
            raise ValueError(f"{key}={name!r} has no form for task kind {kind!r}")
        return dataclasses.replace(forms[kind])
    if name in TEMPLATES and kind == "math":
        return template(name)
    raise ValueError(
        f"{key}={name!r} has no form for {kind} tasks; choose one of {sorted(CHAT_TEMPLATES)}"
        + (f" or {sorted(TEMPLATES)}" if kind == "math" else "")
    )


def chat_messages(t: PromptTemplate, prompt: str) -> list[dict]:
    """The problem as one user turn (the template's response_prefix is not part of it)."""
    if PLACEHOLDER not in t.format:
        raise ValueError(f"prompt template format has no {PLACEHOLDER} placeholder: {t.format!r}")
    return [{"role": "user", "content": t.format.replace(PLACEHOLDER, prompt)}]


def chat_prompt(tokenizer, template: str | PromptTemplate, task) -> list[int]:
    """Model input ids of `task` for a chat checkpoint: the task as one user turn in the
    tokenizer's chat template with the assistant turn opened (transformers'
    apply_chat_template(..., add_generation_prompt=True)), then the response_prefix.

    template: a name (`kind_template`, by task.meta["kind"], default math) or a
    PromptTemplate. BOS: added only when the tokenizer has one and the rendered text
    does not already start with it (Llama-3 templates write it themselves).
    """
    if isinstance(template, str):
        template = kind_template(template, task.meta.get("kind", "math"))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "chat_prompt needs a tokenizer with a chat_template (an HF chat checkpoint); "
            "use a plain prompt template (render) for this tokenizer"
        )
    text = tokenizer.apply_chat_template(chat_messages(template, task.prompt), True)
    bos = getattr(tokenizer, "special_tokens", {}).get("bos_token")
    add_bos = tokenizer.bos_id is not None and not (bos and text.startswith(bos))
    return tokenizer.encode(text + template.response_prefix, bos=add_bos)


# Closed fences only: an unfinished block (a truncated response) is no program.
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9+#]*)[ \t]*\n(.*?)```", re.DOTALL)


def code_from_response(text: str) -> str | None:
    """The body of the last closed fenced code block in `text` (any language tag);
    None when there is none or it is blank."""
    blocks = FENCE.findall(text)
    if not blocks or not blocks[-1][1].strip():
        return None
    return blocks[-1][1]
