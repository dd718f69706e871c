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
