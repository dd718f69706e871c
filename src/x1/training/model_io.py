"""Load a policy for training, add the ``<eois>`` step token, wrap it in LoRA, and save it back.

Why this layer exists: x1's models arrive as GGUF files (no hub is reachable), which
transformers can de-quantise to float weights but which TRL cannot load by name; the step token
must be added to the tokenizer *and* given an embedding row; and a trained policy must come out
as a plain transformers folder (safetensors) that x1's ``TransformersBackend`` opens for search.

``<eois>`` is added as an atomic added token that is *not* marked special: it is always one id,
and ``decode(..., skip_special_tokens=True)`` — what x1's backends call — keeps it, so the
engine can see (and stop on) the end of a step in generated text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from x1.markers import EOIS
from x1.training.config import LoRAConfig, TrainConfig

META_FILE = "x1_policy.json"  # beside a saved adapter: which base it needs and how to rebuild it


@dataclass
class Policy:
    """A loaded (maybe LoRA-wrapped) causal LM, its tokenizer, and the id of ``<eois>`` if added."""

    model: Any
    tokenizer: Any
    eois_id: int | None
    base: str  # where the base weights came from (folder), for adapter metadata
    gguf_file: str | None = None


def resolve_model(model: str | Path, gguf_file: str | None = None) -> tuple[Path, str | None]:
    """A bundled name, a .gguf path or a folder → (folder, gguf file name or None)."""
    from x1.models.registry import BUNDLED
    from x1.models.registry import resolve_model as resolve_bundled

    name = str(model).removeprefix("hf:")
    if any(name.lower() == b.name or name.lower() in b.aliases for b in BUNDLED):
        path = Path(resolve_bundled(name).location)  # the GGUF file, from its package
        return path.parent, path.name
    path = Path(name).expanduser()
    if path.is_file():
        return path.parent, gguf_file or path.name
    if not path.is_dir():
        raise FileNotFoundError(f"model {name!r} is neither a bundled name, a .gguf file nor a folder")
    return path, gguf_file


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def mixed_precision(precision: str, device: torch.device) -> tuple[bool, bool]:
    """(bf16, fp16) flags for TrainingArguments. TRL would turn bf16 on by default, even on CPU."""
    if precision == "bf16":
        if device.type == "cpu":
            from x1.models.hf_loading import warn_if_cpu_bf16_is_emulated

            warn_if_cpu_bf16_is_emulated("precision bf16", fix="use precision fp32 (or auto) on this CPU")
        return True, False
    if precision == "fp16":
        return False, True
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return True, False
    return False, False


def load_tokenizer(location: str | Path, gguf_file: str | None = None) -> Any:
    """The tokenizer, with a pad token (eos when the model has none) so that batches can be padded."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(location), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_eois(tokenizer: Any, model: Any | None = None, init_from: str | None = "\n\n") -> int:
    """Add ``<eois>`` to the tokenizer (idempotent) and give the model an embedding row for it.

    The new input and output rows start as the mean embedding of ``init_from`` (the blank line
    that ends a step today), so the untrained token already sits where steps end; without that
    transformers' mean-resizing draws a random row.
    """
    from tokenizers import AddedToken

    new = EOIS not in tokenizer.get_vocab()
    if new:
        tokenizer.add_tokens([AddedToken(EOIS, special=False, normalized=False, lstrip=False, rstrip=False)])
    eois_id = int(tokenizer.convert_tokens_to_ids(EOIS))
    if model is not None:
        grown = resize_embeddings(model, len(tokenizer), mean=not init_from)
        if (new or grown) and init_from:  # never overwrite a row an earlier run trained
            source = [i for i in tokenizer(init_from, add_special_tokens=False)["input_ids"] if i != eois_id]
            if source:
                with torch.no_grad():
                    emb = model.get_input_embeddings().weight
                    emb[eois_id] = emb[source].mean(dim=0)
                    out = model.get_output_embeddings()
                    if out is not None and out.weight is not emb:
                        out.weight[eois_id] = out.weight[source].mean(dim=0)
    return eois_id


def resize_embeddings(model: Any, vocab: int, mean: bool = True) -> bool:
    """Grow (never shrink: some checkpoints pad their matrix) the embeddings to ``vocab`` rows.

    ``mean`` draws new rows from the old rows' mean and covariance (transformers' default);
    off when the caller sets the rows itself.
    """
    if model.get_input_embeddings().weight.shape[0] >= vocab:
        return False
    model.resize_token_embeddings(vocab, mean_resizing=mean)
    return True


def apply_lora(model: Any, cfg: LoRAConfig, train_embeddings: bool = False) -> Any:
    """Wrap ``model`` in LoRA adapters; with ``train_embeddings`` the embedding matrix trains too.

    A newly added ``<eois>`` needs its input and output rows learned, which LoRA alone never
    does. PEFT's "trainable tokens" would train just that row, but TRL's trainers compute
    log-probabilities straight from ``lm_head.weight`` and so would never see it; keeping the
    (tied) embedding parameter itself trainable works with every trainer, and the adapter is
    then saved together with the embeddings.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    net = get_peft_model(model, config)
    if train_embeddings:
        for param in _embedding_params(net):
            param.requires_grad_(True)
    return net


def _embedding_params(model: Any) -> list[Any]:
    params = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not params[0]:
        params.append(out.weight)
    return params


def load_policy(
    model: str | Path,
    gguf_file: str | None = None,
    *,
    eois_token: bool = False,
    lora: LoRAConfig | None = None,
    device: str = "auto",
    dtype: torch.dtype = torch.float32,
    step_delimiter: str = "\n\n",
    trainable: bool = True,
) -> Policy:
    """Load weights (float32 by default: the master copy for training) and tokenizer.

    Also opens a folder written by :func:`save_policy` with ``merge=False`` (LoRA adapter plus
    ``x1_policy.json``): the base is loaded, resized to the saved tokenizer and the adapter attached.
    """
    from transformers import AutoModelForCausalLM

    location, gguf = resolve_model(model, gguf_file)
    meta_path = location / META_FILE
    if (location / "adapter_config.json").exists() and meta_path.exists():
        return _load_adapter(location, device=device, dtype=dtype, trainable=trainable)
    tokenizer = load_tokenizer(location, gguf)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    net = AutoModelForCausalLM.from_pretrained(str(location), dtype=dtype, **kwargs)
    if gguf:
        forget_gguf_quantizer(net)
    _sync_special_ids(net, tokenizer)
    added = eois_token and EOIS not in tokenizer.get_vocab()  # an x1-trained policy already has it
    eois_id = add_eois(tokenizer, net, init_from=step_delimiter) if eois_token else None
    if eois_id is None and EOIS in tokenizer.get_vocab():
        eois_id = int(tokenizer.convert_tokens_to_ids(EOIS))
    net = net.to(pick_device(device))
    if lora is not None and lora.enabled:
        net = apply_lora(net, lora, train_embeddings=added)
    return Policy(net, tokenizer, eois_id, str(location), gguf)


def policy_from_config(cfg: TrainConfig) -> Policy:
    """Seeded load, so that the <eois> row and the LoRA init are reproducible."""
    from transformers import set_seed

    set_seed(cfg.seed)
    return load_policy(
        cfg.model,
        cfg.gguf_file,
        eois_token=cfg.eois_token,
        lora=cfg.lora,
        device=cfg.device,
        step_delimiter=cfg.step_delimiter,
    )


def _load_adapter(location: Path, *, device: str, dtype: torch.dtype, trainable: bool) -> Policy:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    meta = json.loads((location / META_FILE).read_text())
    base_dir, gguf = Path(meta["base"]), meta.get("gguf_file")
    tokenizer = load_tokenizer(location)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype, **kwargs)
    if gguf:
        forget_gguf_quantizer(base)
    _sync_special_ids(base, tokenizer)
    resize_embeddings(base, int(meta.get("vocab_size", len(tokenizer))))
    net = PeftModel.from_pretrained(base, str(location), is_trainable=trainable).to(pick_device(device))
    eois_id = int(tokenizer.convert_tokens_to_ids(EOIS)) if EOIS in tokenizer.get_vocab() else None
    return Policy(net, tokenizer, eois_id, str(base_dir), gguf)


def forget_gguf_quantizer(model: Any) -> None:
    """Unmark a model loaded from GGUF as quantized: its weights are already plain float tensors.

    transformers 5 loads GGUF through a "GGUF quantizer" that de-quantises on load but leaves the
    model flagged, and ``Trainer`` refuses to fine-tune a flagged model without adapters; the flag
    would also be written into a saved config.json, which then could not be loaded back.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _sync_special_ids(model: Any, tokenizer: Any) -> None:
    """Give the model's (generation) config the tokenizer's pad/eos ids; GGUF configs often lack pad."""
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        if getattr(cfg, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            cfg.pad_token_id = tokenizer.pad_token_id
        if getattr(cfg, "eos_token_id", None) is None and tokenizer.eos_token_id is not None:
            cfg.eos_token_id = tokenizer.eos_token_id


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


ADAPTER_DIR = "adapter"  # inside a merged LoRA run's folder: the adapter it was merged from


def base_dtype(location: str | Path, gguf_file: str | None = None) -> torch.dtype:
    """The dtype of a base model's weights, which a merged copy is saved in: a transformers folder's own
    (its config.json), bfloat16 for a GGUF (quantised or half weights: float32 would double or more its size)."""
    config = Path(location) / "config.json"
    if gguf_file or not config.is_file():
        return torch.bfloat16
    data = json.loads(config.read_text())
    name = data.get("dtype") or data.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _save_in_dtype(model: Any, out: Path, dtype: torch.dtype) -> None:
    """``save_pretrained`` with the weights cast to ``dtype`` on the way out; the model in memory is not changed.
    Tied weights (one storage) stay one tensor, so they are still written once."""
    cast: dict[int, torch.Tensor] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            tensor = cast.setdefault(tensor.data_ptr(), tensor.to(dtype))
        state[name] = tensor
    model.save_pretrained(str(out), state_dict=state)
    config = out / "config.json"  # transformers writes the dtype of the model in memory; say what the file holds
    data = json.loads(config.read_text())
    data["dtype"] = str(dtype).removeprefix("torch.")
    config.write_text(json.dumps(data, indent=2) + "\n")


def save_policy(
    model: Any, tokenizer: Any, out_dir: str | Path, *, merge: bool = True, base: str = "", gguf_file: str | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """Write safetensors weights + tokenizer to ``out_dir``; returns the model that was saved.

    A LoRA model always has its adapter written (plus ``x1_policy.json`` naming the base, so that
    :func:`load_policy` can rebuild it): into ``out_dir`` itself, or, when ``merge``, into
    ``out_dir/adapter`` while ``out_dir`` gets the adapter merged into the base, in ``dtype``
    (default: the base's own, :func:`base_dtype`) — a folder that loads anywhere, x1's
    TransformersBackend included. Merging replaces the adapter layers in place, so use the
    returned model afterwards. A plain model is written as it is.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.get_base_model().config if is_peft(model) else model.config
    config.use_cache = True  # trainers switch the KV cache off; generation wants it back
    if not is_peft(model):
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        return model
    adapter = out / ADAPTER_DIR if merge else out
    adapter.mkdir(parents=True, exist_ok=True)
    trained_embeddings = any(p.requires_grad for p in _embedding_params(model))
    model.save_pretrained(str(adapter), save_embedding_layers=trained_embeddings)
    meta = {"base": base, "gguf_file": gguf_file, "vocab_size": len(tokenizer)}
    (adapter / META_FILE).write_text(json.dumps(meta, indent=2))
    tokenizer.save_pretrained(str(adapter))
    if merge:
        model = model.merge_and_unload()
        _save_in_dtype(model, out, dtype or (base_dtype(base, gguf_file) if base else torch.float32))
        tokenizer.save_pretrained(str(out))
    return model


def save_from_config(policy: Policy, cfg: TrainConfig, out_dir: str | Path | None = None) -> Any:
    return save_policy(
        policy.model,
        policy.tokenizer,
        out_dir or cfg.output_dir,
        merge=cfg.lora.merge_on_save,
        base=policy.base,
        gguf_file=policy.gguf_file,
    )
