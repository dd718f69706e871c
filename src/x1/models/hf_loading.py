"""Loading a transformers model for x1: torch on demand, the dtype, unsafe-pickle refusal, LoRA adapters.

Kept apart from the decoding backend (``hf.py``) because the value models load their backbones
the same way and the same checks apply to them: weights that are pickles of more than tensors
are refused with the fix, and a dtype left to "auto" is chosen for the device.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from x1.models.base import BackendError


def import_torch() -> Any:
    """torch, after checking that transformers is there too (both come with the ``hf`` extra)."""
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as err:
        raise BackendError(
            f"the transformers backend needs torch and transformers ({err.name} is missing); fix: pip install 'x1[hf]'"
        ) from err
    return torch


def pick_dtype(dtype: Any, device: Any) -> Any:
    """The torch dtype for ``dtype`` (None/"auto": bf16 or fp16 on a GPU, fp32 on a CPU, where half precision is slow and lossy)."""
    import torch

    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise BackendError(f"unknown dtype {dtype!r}; fix: use float32, bfloat16 or float16")
        return value
    return dtype


@functools.cache
def native_bf16_flags() -> tuple[str, ...]:
    """The native bfloat16 groups this CPU reports (avx512_bf16, amx_bf16); read once per process,
    since training asks on every step."""
    from x1.models.llama_cpp.build import reported_cpu_flags

    return tuple(sorted({"avx512_bf16", "amx_bf16"} & reported_cpu_flags()))


def warn_if_cpu_bf16_is_emulated(what: str, fix: str) -> None:
    """bfloat16 on a CPU without AVX512-BF16 or AMX-BF16 is emulated: about 8x slower than float32
    (measured with a PRM's forward pass, see benchmarks/evaluators.py). A warning, so it reads the
    CPU's reported flags; nothing is built from them."""
    import warnings

    import torch

    if torch.cuda.is_available() or native_bf16_flags():
        return
    warnings.warn(f"{what}: this CPU reports no native bfloat16 (avx512_bf16, amx_bf16), so bfloat16 is emulated and "
                  f"about 8x slower than float32; fix: {fix}", stacklevel=3)


def dtype_kwarg() -> str:
    """transformers 4.56 renamed ``torch_dtype`` to ``dtype`` (the old name warns in 5.x)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@contextlib.contextmanager
def load_errors(path: str | Path) -> Iterator[None]:
    """Turn what ``from_pretrained`` raises on ``path`` into one BackendError line with the fix."""
    try:
        yield
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) refused a pickle that is not plain tensors
        raise BackendError(f"{path} holds pickled weights that are not plain tensors (they could run code), so they are "
                           "not loaded; fix: use a folder with model.safetensors") from err
    except (OSError, ValueError, ImportError) as err:
        raise BackendError(
            f"transformers could not load {path}: {(str(err).splitlines() or [type(err).__name__])[0]}; "
            "fix: pass a transformers folder (config.json + weights) or a GGUF file of a supported architecture"
        ) from err


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends generation: the generation config's, the model config's and the tokenizer's."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def logits_keep_arg(model: Any) -> str | None:
    """Name of the forward argument that limits logits to the last positions (saves memory)."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def adapter_folder(name: str, path: str | Path, vocab: int) -> Path:
    """Check that ``path`` is a LoRA adapter that only adds weights, so it can share the base with others."""
    folder = Path(path).expanduser()
    if not name:
        raise BackendError(f"an adapter at {folder} has an empty name; fix: pass adapters={{'NAME': folder}}")
    if not (folder / "adapter_config.json").is_file():
        raise BackendError(
            f"adapter {name!r}: {folder} is not a PEFT adapter folder (no adapter_config.json); fix: pass the folder of a "
            "LoRA run saved unmerged (lora.merge_on_save: false); a merged folder is a whole model: load it as the model instead"
        )
    meta = folder / "x1_policy.json"  # written by x1's save_policy beside an unmerged adapter
    if meta.is_file():
        saved_vocab = json.loads(meta.read_text()).get("vocab_size")
        if saved_vocab is not None and int(saved_vocab) != vocab:
            raise BackendError(
                f"adapter {name!r} was trained with a {saved_vocab}-token vocabulary but this base model's tokenizer has {vocab}; "
                "fix: serve it on the base it was trained on (its x1_policy.json names it), or merge it and load it as a model"
            )
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        config = json.loads((folder / "adapter_config.json").read_text())
        own = [str(m) for m in config.get("modules_to_save") or []]  # PEFT keeps one copy of these per adapter
        with safe_open(str(weights), framework="pt") as fh:
            names: list[str] = list(fh.keys())  # safe_open is not iterable itself
        foreign = [k for k in names if "lora_" not in k and not any(f".{m}." in f".{k}" for m in own)]
        if foreign:
            # e.g. embeddings saved because <eois> was added: loading them would rewrite the shared base for everyone.
            raise BackendError(
                f"adapter {name!r} also stores base-model weights ({foreign[0]}, ...), which would change the base shared by "
                "every adapter; fix: merge it and load it as its own model, or train the adapter without a new token (eois_token: false)"
            )
    return folder


def attach_adapters(model: Any, adapters: dict[str, str | Path], vocab: int) -> tuple[Any, dict[str, Path], dict[str, str]]:
    """Attach every adapter to the one base model: their weights are small, the base is held once.

    Returns the PEFT-wrapped model, served name -> folder, and served name -> PEFT's name (free of
    the '.' PEFT cannot take)."""
    try:
        from peft import PeftModel
    except ImportError as err:
        raise BackendError("LoRA adapters need the peft package; fix: pip install 'x1[train]' (or pip install peft)") from err
    folders = {str(name): adapter_folder(str(name), path, vocab) for name, path in adapters.items()}
    loaded: dict[str, Path] = {}
    peft_names: dict[str, str] = {}
    for i, (name, folder) in enumerate(folders.items()):
        key = f"x1_adapter_{i}"
        try:
            if i == 0:
                model = PeftModel.from_pretrained(model, str(folder), adapter_name=key, is_trainable=False)
            else:
                model.load_adapter(str(folder), adapter_name=key, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise BackendError(
                f"adapter {name!r} at {folder} does not fit this base model: {first}; fix: pass an adapter trained on this base"
            ) from err
        loaded[name] = folder
        peft_names[name] = key
    return model, loaded, peft_names
