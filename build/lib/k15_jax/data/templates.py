"""Prompt templates: raw problem text -> model input, as config.

`format` holds the literal placeholder `{prompt}` (substituted by plain replacement, so
LaTeX braces in the template or the problem need no escaping). `response_prefix` is
text the model input ends with that belongs to the answer (a prefill such as
`\\boxed{`); the verifier must see it, so score `response_text(t, completion)`.
"""

from __future__ import annotations

import dataclasses

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
