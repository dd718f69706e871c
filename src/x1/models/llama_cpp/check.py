"""Run llama.cpp where a crash cannot take x1 down: a child process, its death a ``BackendError``.

A build whose instructions the machine cannot run dies by a signal (SIGSEGV, SIGILL) inside C,
which no Python ``except`` sees. Setup's self-check and ``x1 doctor`` therefore decode in a child
and turn its death into one line that names the signal and the rebuild command.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

from x1.models.base import BackendError

REBUILD_HINT = "X1_LLAMA_FEATURES=safe scripts/setup.sh  (or =baseline; see python -m x1.models.llama_cpp.build --help)"

_DECODE = """
import json, time
from x1.models.base import GenerationRequest
from x1.models.llama_cpp import LlamaCppBackend
from x1.models.registry import resolve_model
spec = resolve_model({model!r})
start = time.perf_counter()
backend = LlamaCppBackend(spec.location, n_ctx=1024, n_seq_max=4)
requests = [GenerationRequest(p, n=1, max_tokens={tokens}, temperature=0.0) for p in ("2+2=", "The capital of France is")]
results = backend.generate(requests)
print(json.dumps({{"model": spec.name, "tokens": sum(c.generated_tokens for g in results for c in g),
                  "text": results[0][0].text, "seconds": time.perf_counter() - start}}))
"""


def run_in_child(code: str, *, what: str, timeout: float = 300.0) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout, or raise ``BackendError`` saying how it died."""
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BackendError(f"{what} hung for {timeout:.0f} s in a child process; fix: rebuild llama.cpp with {REBUILD_HINT}") from err
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise BackendError(
            f"llama.cpp crashed ({name}) in a child process during {what}: this build uses instructions this machine "
            f"cannot run; fix: {REBUILD_HINT}"
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError(f"{what} failed in a child process (exit {done.returncode}): {last}")
    return done.stdout


def self_check(model: str = "smollm2", tokens: int = 8, timeout: float = 300.0) -> str:
    """Load ``model`` and greedily decode a few tokens of two prompts in one batch, in a child process."""
    from x1.models.llama_cpp.build import read_build_record

    start = time.perf_counter()
    out = run_in_child(_DECODE.format(model=model, tokens=tokens), what=f"a {tokens}-token decode of {model}", timeout=timeout)
    result = json.loads(out.strip().splitlines()[-1])
    record = read_build_record()
    features = " ".join(record["features"]) if record else "unknown (not built by x1's setup)"
    if result["tokens"] <= 0:
        raise BackendError(f"{model} decoded no tokens in the self-check; fix: rebuild llama.cpp with {REBUILD_HINT}")
    return (
        f"llama.cpp self-check ok: {result['model']} decoded {result['tokens']} tokens ({result['text'].strip()[:30]!r}) "
        f"in {time.perf_counter() - start:.1f} s; build features: {features}"
    )
