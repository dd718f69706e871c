"""llama-cpp-python, imported once for the package: ``llama`` is None when the optional runtime is missing.

(Absolute ``import llama_cpp`` reaches the third-party package, not this one: x1's is ``x1.models.llama_cpp``.)
"""

from __future__ import annotations

import ctypes
from types import ModuleType

llama: ModuleType | None
try:  # the runtime is optional: `pip install 'x1[cpu]'`
    import llama_cpp as llama
except ImportError:  # pragma: no cover - exercised only without the extra
    llama = None

# Module-level so the C callback is never garbage-collected while llama.cpp holds it.
_SILENT_LOG = llama.llama_log_callback(lambda level, text, user_data: None) if llama else None


def silence_logs() -> None:
    """Route llama.cpp's own log lines (model loading, context sizes) to nowhere."""
    assert llama is not None
    llama.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
