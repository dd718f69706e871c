"""Shared sampling helpers: chat rendering without a tokenizer, seeds for n samples.

Kept apart from the backends so the light ones (OpenAI) need no torch.
"""

from __future__ import annotations

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def render_chatml(messages: list[dict[str, str]]) -> str:
    """ChatML, the format of Qwen and SmolLM2: the fallback when no template is known."""
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


def render_template(template: str, messages: list[dict[str, str]], **extra: object) -> str:
    """Render a Hugging Face style Jinja chat template in a sandbox, ready for the assistant's turn."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as err:  # pragma: no cover - jinja2 comes with torch/transformers
        from x1.models.base import BackendError

        raise BackendError("a chat_template needs jinja2; fix: pip install jinja2") from err

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    values = {"bos_token": "", "eos_token": "", **extra}
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, **values)


def sample_seed(seed: int | None, index: int) -> int | None:
    """Seed of the ``index``-th of n samples: distinct per sample, reproducible per request."""
    if seed is None:
        return None
    return (seed * 1_000_003 + index) % (2**63 - 1) if index else seed


def resolve_chat_template(value: str | None) -> str | None:
    """A chat template from what a user names: ``chatml`` (None: ChatML), Jinja text, a Jinja file, or a model
    folder whose ``tokenizer_config.json`` holds one. Raises BackendError with the fix otherwise."""
    import json
    from pathlib import Path

    from x1.models.base import BackendError

    if value is None or value == "chatml":
        return None
    if "{{" in value or "{%" in value:  # the Jinja text itself
        return value
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    config = path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if isinstance(template, str) and template:
            return template
        raise BackendError(f"--chat-template {value}: {config} has no chat_template; fix: pass a Jinja file or chatml")
    raise BackendError(f"--chat-template {value!r} is neither chatml, a template file, nor a model folder with tokenizer_config.json")
