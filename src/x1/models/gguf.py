"""The GGUF file check, a leaf: the registry and the llama.cpp backend both read it, neither from the other.

It lives apart so that the backend need not import the registry (which starts backends, the
backend among them): the check needs only the file's first four bytes and ``BackendError``.
"""

from __future__ import annotations

from pathlib import Path

from x1.models.base import BackendError

GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Fail early, with the fix, on a file that is missing or not a GGUF model."""
    if not path.exists():
        raise BackendError(f"model file {path} does not exist; fix: pass an existing .gguf path or a bundled name (x1 models)")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise BackendError(
            f"model file {path} is not a GGUF file (starts with {magic!r}); fix: pass a .gguf model "
            "or a transformers folder (with config.json)"
        )
