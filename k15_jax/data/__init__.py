"""Data: the Task record, benchmark loaders, prompt sources, prompt templates (plain and
chat), the synthetic suite, curation."""

from k15_jax.data.loaders import (
    LOADERS,
    BenchmarkDataConfig,
    Task,
    load_aime24,
    load_gsm8k,
    load_jsonl_tasks,
    load_math500,
    task_to_json,
)
from k15_jax.data.sources import SourceConfig, load_source, load_sources, mix
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite, demonstration
from k15_jax.data.templates import (
    CHAT_TEMPLATES,
    TEMPLATES,
    PromptTemplate,
    chat_prompt,
    code_from_response,
    render,
    response_text,
    template,
)

__all__ = [
    "CHAT_TEMPLATES",
    "LOADERS",
    "TEMPLATES",
    "BenchmarkDataConfig",
    "PromptTemplate",
    "SourceConfig",
    "SyntheticConfig",
    "SyntheticSuite",
    "Task",
    "chat_prompt",
    "code_from_response",
    "demonstration",
    "load_aime24",
    "load_gsm8k",
    "load_jsonl_tasks",
    "load_math500",
    "load_source",
    "load_sources",
    "mix",
    "render",
    "response_text",
    "task_to_json",
    "template",
]
