"""Chat templates: a checkpoint's jinja2 `chat_template` rendered as transformers renders it.

A chat checkpoint is trained on its own turn markup (<|im_start|>user ... <|im_end|>), so
the policy must see exactly the text `transformers`' `apply_chat_template` would produce.
This module reproduces that renderer without importing transformers (a test-only
dependency): the same sandboxed jinja2 environment (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loop controls), the same globals (`raise_exception`,
`strftime_now`, `dict`, `namespace`), the same `tojson` filter (no HTML escaping), and
the same variables (messages, add_generation_prompt, the special tokens by name).
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _raise_exception(message):
    # templates call this to reject a conversation (e.g. roles out of order)
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja's own tojson escapes <, >, & for HTML; chat templates need the plain JSON
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt):
    # Llama-3.x templates stamp today's date into the system turn
    return datetime.now().strftime(fmt)


class _TemplateDict:
    # `dict(...)` in templates without exposing the dict type itself to attribute tricks
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    # namespace() that refuses underscore names, so templates cannot reach interpreter internals
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot set underscore attributes on a namespace: {name!r}"
            )


class _GenerationBlock(jinja2.ext.Extension):
    # `{% generation %}...{% endgeneration %}` marks assistant text for loss masks in
    # transformers; for rendering the block is its body
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template; raises ValueError with jinja's message on a syntax error."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(
            f"chat_template does not compile: {e.message} (template line {e.lineno}); "
            "fix chat_template in tokenizer_config.json"
        ) from None


def _messages(messages: list[dict]) -> list[dict]:
    # transformers drops None-valued message keys (`content=None` from chat APIs), so
    # `message.tool_calls is defined` reads the same here
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"chat message {i} must be a dict with role and content, got {m!r}")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def render_chat(
    source: str | None,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    special_tokens: dict[str, str] | None = None,
    **kwargs,
) -> str:
    """`messages` (dicts with "role" and "content") rendered with the template `source`.

    special_tokens: {"bos_token": "<s>", "eos_token": ...} as the template reads them.
    Raises ValueError when there is no template or it fails (naming jinja's error).
    """
    if not source:
        raise ValueError(
            "the tokenizer has no chat_template (tokenizer_config.json 'chat_template' or "
            "chat_template.jinja); use a chat checkpoint or a plain prompt template"
        )
    if not messages:
        raise ValueError("cannot render an empty conversation; give at least one message")
    template = compile_template(source)
    # tools/documents None as transformers passes them (`tools is not none` reads false)
    context = {"tools": None, "documents": None, **(special_tokens or {}), **kwargs}
    try:
        return template.render(
            messages=_messages(list(messages)),
            add_generation_prompt=add_generation_prompt,
            **context,
        )
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat_template failed to render: {type(e).__name__}: {e}") from None
