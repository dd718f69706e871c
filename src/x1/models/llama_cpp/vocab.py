"""A llama.cpp model's vocabulary: text to tokens and back, and its chat template.

Kept apart from the backend because none of it touches the context or the KV cache: it needs
only the loaded model, and its piece cache makes per-token detokenizing a dictionary lookup.
"""

from __future__ import annotations

import ctypes
from typing import Any

from x1.models.llama_cpp.runtime import llama


class LlamaVocab:
    """The tokenizer and chat template of one loaded model (``model``: llama.cpp's model handle)."""

    def __init__(self, model: Any) -> None:
        assert llama is not None
        self._model = model
        self.handle = llama.llama_model_get_vocab(model)
        self.n_tokens: int = llama.llama_vocab_n_tokens(self.handle)
        self.add_bos: bool = llama.llama_vocab_get_add_bos(self.handle)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._chat_formatter = self._load_chat_template()

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        data = text.encode()
        add = self.add_bos if add_bos is None else add_bos
        cap = len(data) + 8
        buf = (llama.llama_token * cap)()
        n = llama.llama_tokenize(self.handle, data, len(data), buf, cap, add, True)
        if n < 0:
            buf = (llama.llama_token * -n)()
            n = llama.llama_tokenize(self.handle, data, len(data), buf, -n, add, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            n = llama.llama_token_to_piece(self.handle, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama.llama_vocab_is_eog(self.handle, token))

    def bos_or_eos(self) -> int:
        """BOS, or EOS for a model without one: a token to condition a first token on."""
        bos = llama.llama_vocab_bos(self.handle)
        return bos if bos >= 0 else llama.llama_vocab_eos(self.handle)

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def _load_chat_template(self) -> Any:
        template = self._meta("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def token_text(key: str) -> str:
            tid = self._meta(key)
            return self.piece(int(tid)).decode(errors="replace") if tid is not None else ""

        return Jinja2ChatFormatter(template, token_text("tokenizer.ggml.eos_token_id"), token_text("tokenizer.ggml.bos_token_id"))

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        if self._chat_formatter is None:
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        text = self._chat_formatter(messages=messages).prompt
        bos = self._chat_formatter.bos_token
        # llama.cpp adds BOS itself when the model wants it; do not double it.
        return text[len(bos):] if bos and self.add_bos and text.startswith(bos) else text
