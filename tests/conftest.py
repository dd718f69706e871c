import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def smollm2_llama():
    """The bundled SmolLM2-135M through in-process llama.cpp, shared by the session."""
    pytest.importorskip("llama_cpp")
    from x1.models.llama_cpp import LlamaCppBackend
    from x1.models.registry import smollm2_path

    backend = LlamaCppBackend(smollm2_path(), n_ctx=8192, n_seq_max=32)
    yield backend
    backend.close()
