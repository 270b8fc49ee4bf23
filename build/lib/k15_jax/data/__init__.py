"""Data: the Task record, benchmark loaders, prompt templates, the synthetic suite, curation."""

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
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite, demonstration
from k15_jax.data.templates import TEMPLATES, PromptTemplate, render, response_text, template

__all__ = [
    "LOADERS",
    "TEMPLATES",
    "BenchmarkDataConfig",
    "PromptTemplate",
    "SyntheticConfig",
    "SyntheticSuite",
    "Task",
    "demonstration",
    "load_aime24",
    "load_gsm8k",
    "load_jsonl_tasks",
    "load_math500",
    "render",
    "response_text",
    "task_to_json",
    "template",
]
