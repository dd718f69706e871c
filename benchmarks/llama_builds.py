"""Which llama.cpp build is fastest on this machine: the cached feature sets, side by side in one run.

    python benchmarks/llama_builds.py [--builds safe auto] [--model smollm2] [--rounds 2]

Each build is a wheel from the feature-set cache (``python -m x1.models.llama_cpp.build install
--features ...`` makes one). Every build is unpacked beside the others and measured in its own
child process (two copies of libllama cannot share one), in alternating rounds (A B A B), so the
machine's drift hits all of them alike. The table gives, per build, the best round of:
prompt tokens/s prefilling 32 chat prompts, and generated tokens/s for 1 and 32 sequences of
48 new tokens with llama.cpp's own C greedy sampler (``backends.llama_cpp_own_throughput``,
whose wall time includes the prompts' prefill), then each rate as a ratio to the first build's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from x1.models.llama_cpp.build import LLAMA_CPP_VERSION, choose_features, wheel_dir

console = Console()
HERE = Path(__file__).resolve().parent

_MEASURE = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
import llama_cpp
from backends import llama_cpp_own_throughput, prompts_for
from x1.models.llama_cpp import LlamaCppBackend
from x1.models.registry import resolve_model
assert llama_cpp.__file__.startswith({target!r}), llama_cpp.__file__
spec = resolve_model({model!r})
backend = LlamaCppBackend(spec.location, n_ctx=8192, n_seq_max=32)
prompts = prompts_for(backend, 32)
prompt_tokens = sum(len(backend.tokenize(p)) for p in prompts)
start = time.perf_counter()
llama_cpp_own_throughput(backend, prompts, 1)
prefill = prompt_tokens / (time.perf_counter() - start)
one, _ = llama_cpp_own_throughput(backend, prompts[:1], {tokens})
many, _ = llama_cpp_own_throughput(backend, prompts, {tokens})
print(json.dumps({{"prefill": prefill, "decode_1": one, "decode_32": many}}))
"""


def unpack(features: str, root: Path) -> Path:
    """Install the cached wheel for ``features`` into a folder of its own; error if none is cached."""
    choice = choose_features(features)
    wheels = sorted(wheel_dir(choice).glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise SystemExit(
            f"no cached llama-cpp-python {LLAMA_CPP_VERSION} wheel for [{choice.key}]; "
            f"fix: python -m x1.models.llama_cpp.build install --features {features}  (in a scratch venv)"
        )
    target = root / choice.key
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheels[-1])],
                   check=True, capture_output=True)
    return target


def measure(target: Path, model: str, tokens: int) -> dict[str, float]:
    code = _MEASURE.format(benchmarks=str(HERE), target=str(target), model=model, tokens=tokens)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"killed by signal {-done.returncode}"])[-1]
        raise SystemExit(f"the build in {target} failed to run: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", nargs="+", default=["safe", "auto"],
                        help="feature sets as `build install --features` takes them (e.g. safe auto avx2,fma)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per sequence")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    names = args.builds
    with tempfile.TemporaryDirectory(prefix="x1-builds-") as tmp:
        targets = {name: unpack(name, Path(tmp)) for name in names}
        best: dict[str, dict[str, float]] = {}
        for round_ in range(args.rounds):
            for name, target in targets.items():
                result = measure(target, args.model, args.tokens)
                console.print(f"round {round_ + 1}, {name} ({target.name}): " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()),
                              markup=False)
                kept = best.setdefault(name, result)
                for key, value in result.items():
                    kept[key] = max(kept[key], value)
    first = best[names[0]]
    for name in names:
        console.print(f"{name}: {targets[name].name}", markup=False)
    table = Table("build", "prefill tok/s", "1 seq tok/s", "32 seqs tok/s", f"ratios to {names[0]}",
                  title=f"llama.cpp builds on {args.model}, best of {args.rounds} alternating rounds")
    for name in names:
        row = best[name]
        ratios = " / ".join(f"{row[k] / first[k]:.2f}" for k in ("prefill", "decode_1", "decode_32"))
        table.add_row(name, f"{row['prefill']:.0f}", f"{row['decode_1']:.1f}", f"{row['decode_32']:.1f}", ratios)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
