"""The value model: a causal LM's backbone plus a linear head on the last token, q = tanh(·) ∈ [−1, 1].

``HeadedLM`` is the shared machinery of every trained evaluator (value model, outcome and
process reward models in ``reward_model.py``): load a backbone from a transformers folder or a
GGUF file, encode and pad texts (left or right: the last *real* token is found from the attention
mask, and position ids come from the mask, so padding never changes a prediction), and save or
load backbone + tokenizer + head with safetensors. Subclasses only choose the activation and
which positions are read.

A backbone may carry LoRA adapters (``add_lora``): then ``save`` writes only the adapter, the head and
the name of the base, so a trained evaluator is megabytes (small enough for git) and ``load`` rebuilds
it on the base, merged, so inference pays nothing for the adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from x1.evaluators.base import EvalItem
from x1.evaluators.kv_memo import KVMemo
from x1.evaluators.spec import HEAD_CONFIG
from x1.models.base import BackendError

HEAD_FILE = "x1_head.safetensors"
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's; its presence marks a folder whose backbone is an adapter


def _locate(path_or_name: str | Path, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or hub name, gguf file name): a .gguf path, a folder, or a bundled model name."""
    location = Path(path_or_name).expanduser()
    if location.is_file():
        return str(location.parent), gguf_file or location.name
    if location.exists():
        return str(location), gguf_file
    from x1.models.registry import resolve_model

    try:
        spec = resolve_model(str(path_or_name))
    except BackendError:
        return str(path_or_name), gguf_file  # maybe a hub id; transformers will say if not
    if spec.kind in ("hf", "llamacpp") and Path(spec.location).exists():
        return _locate(spec.location, gguf_file)
    raise BackendError(f"{path_or_name!r} is not a local model; a value model needs a transformers folder or a GGUF file")


def _base_reference(path_or_name: str | Path, gguf_file: str | None) -> dict[str, str | None]:
    """How a saved adapter names its base: a bundled name as it is (it resolves on any machine), else an absolute path."""
    location = Path(path_or_name).expanduser()
    if location.exists():
        return {"model": str(location.resolve()), "gguf_file": gguf_file}
    return {"model": str(path_or_name), "gguf_file": gguf_file}


def _load_backbone(path_or_name: str | Path, gguf_file: str | None, target: torch.device, dtype: Any) -> tuple[Any, nn.Module]:
    """(tokenizer, base model without its LM head) of a causal LM: transformers folder, .gguf path or bundled name."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from x1.models.hf_loading import dtype_kwarg, load_errors, pick_dtype

    location, gguf = _locate(path_or_name, gguf_file)
    load: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    with load_errors(path_or_name):
        tokenizer = AutoTokenizer.from_pretrained(location, **load)
        if (Path(location) / HEAD_CONFIG).exists():  # a saved evaluator's own (full) backbone
            return tokenizer, AutoModel.from_pretrained(location, **{dtype_kwarg(): pick_dtype(dtype, target)}).to(target)
        lm = AutoModelForCausalLM.from_pretrained(location, **{dtype_kwarg(): pick_dtype(dtype, target)}, **load)
    return tokenizer, lm.base_model.to(target)  # drops the LM head: only hidden states are needed


class HeadedLM(nn.Module):
    """A transformer backbone with a scalar linear head; ``forward`` is defined by subclasses.

    The head runs in its own dtype (float32 unless moved), so a bf16 backbone keeps a precise head.
    """

    kind: ClassVar[str] = "headed"

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        head: nn.Linear | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        seed: int = 0,
        batch_size: int = 16,
        head_std: float = 0.02,
    ) -> None:
        super().__init__()
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        hidden = int(backbone.config.hidden_size)
        if head is None:
            head = nn.Linear(hidden, 1, device=self._backbone_device(), dtype=torch.float32)
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():  # small seeded init: untrained outputs near 0 yet different per text
                head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * head_std)
                head.bias.zero_()
        self.head = head
        self.max_length = max_length
        self.padding_side = padding_side
        self.batch_size = batch_size
        self.share_prefixes = True  # inference runs a prefix that sequences share once (position_logits)
        self.kv_memo: KVMemo | None = None  # scored paths' caches for the next call; ``load`` sets one for inference
        # positions the backbone has run, padding included (a LoRA wrapper calls this same module): the compute an
        # evaluator's calls cost, which the engine charges to the problems it scored (Compute.evaluator_tokens)
        self.positions_run = 0
        backbone.register_forward_pre_hook(self._count_positions, with_kwargs=True)
        pad = getattr(tokenizer, "pad_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad if pad is not None else eos if eos is not None else 0)  # never read: the mask decides
        self.base: dict[str, str | None] | None = None  # where the backbone's weights came from; an adapter needs it

    def _count_positions(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor):
            self.positions_run += int(ids.numel())

    def _backbone_device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def device(self) -> torch.device:
        return self._backbone_device()

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained_lm(
        cls,
        path_or_name: str | Path,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: Any = None,
        **options: Any,
    ) -> Any:
        """A fresh head on the base model of a causal LM (transformers folder, .gguf path, bundled name)."""
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer, backbone = _load_backbone(path_or_name, gguf_file, target, dtype)
        model = cls(backbone, tokenizer, **options)
        model.base = _base_reference(path_or_name, gguf_file)
        return model

    def add_lora(self, r: int, alpha: int, dropout: float = 0.0, target_modules: list[str] | str = "all-linear") -> None:
        """Freeze the backbone and give it LoRA adapters; the head stays fully trainable."""
        from peft import LoraConfig, get_peft_model

        if self.is_lora:
            return  # a loaded adapter keeps training as it is
        if self.base is None:
            raise BackendError("this model does not know its base weights, so its adapter could not be loaded back; "
                               "fix: build it with from_pretrained_lm, or load an adapter folder with trainable=True")
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.backbone = get_peft_model(self.backbone, config)

    @property
    def is_lora(self) -> bool:
        from x1.training.model_io import is_peft

        return is_peft(self.backbone)

    def _extra_config(self) -> dict[str, Any]:
        """What a subclass adds to the saved head config (and takes back as __init__ keywords)."""
        return {}

    def save(self, directory: str | Path) -> Path:
        """Backbone (save_pretrained, safetensors), tokenizer, head weights and head config in one folder."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(directory))  # the adapter alone when the backbone has one
        self.tokenizer.save_pretrained(str(directory))
        weights = {name: value.detach().to("cpu").contiguous() for name, value in self.head.state_dict().items()}
        save_file(weights, str(directory / HEAD_FILE))
        config = {
            "kind": self.kind,
            "hidden_size": self.head.in_features,
            "max_length": self.max_length,
            "padding_side": self.padding_side,
            "batch_size": self.batch_size,
            **self._extra_config(),
        }
        if self.is_lora:
            config["lora_base"] = self.base
        (directory / HEAD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, device: str | None = None, dtype: Any = None, trainable: bool = False, **overrides: Any
    ) -> Any:
        """Read back what ``save`` wrote; refuses a folder that holds another kind of model.

        An adapter folder is rebuilt on its base: merged into it for inference, or kept as a trainable
        adapter (``trainable``) to continue fitting.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from x1.models.hf_loading import dtype_kwarg, pick_dtype

        directory = Path(directory)
        config_path = directory / HEAD_CONFIG
        if not config_path.exists():
            raise BackendError(f"{directory} holds no {HEAD_CONFIG}; fix: point at a folder written by save(), or use from_pretrained_lm")
        config = json.loads(config_path.read_text())
        if config.get("kind") != cls.kind:
            raise BackendError(f"{directory} holds a {config.get('kind')!r} model, not a {cls.kind!r} one; load it with its own class")
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        base = config.pop("lora_base", None)
        adapter = (directory / ADAPTER_CONFIG).exists()
        if adapter:
            backbone = cls._adapter_backbone(directory, base, target, dtype, trainable)
        else:
            backbone = AutoModel.from_pretrained(str(directory), **{dtype_kwarg(): pick_dtype(dtype, target)}).to(target)
        head = nn.Linear(int(config["hidden_size"]), 1)
        head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        options = {k: v for k, v in config.items() if k not in ("kind", "hidden_size")}
        model = cls(backbone, tokenizer, head=head.to(target), **{**options, **overrides})
        if not adapter:
            model.base = _base_reference(directory, None)  # a full backbone is its own base
        elif trainable:
            model.base = base
        # else merged: neither the base nor this folder holds these weights, so no new adapter may name them
        if not trainable:
            model.eval()
            model.kv_memo = KVMemo()  # weights that never change: a cache made in one call is right in the next
        return model

    @staticmethod
    def _adapter_backbone(directory: Path, base: dict[str, Any] | None, target: torch.device, dtype: Any, trainable: bool) -> Any:
        from peft import PeftModel

        if not base or not base.get("model"):
            raise BackendError(f"{directory} holds a LoRA adapter but {HEAD_CONFIG} names no base model (lora_base); "
                               "fix: refit it with this version of x1")
        try:
            _, backbone = _load_backbone(str(base["model"]), base.get("gguf_file"), target, dtype)
        except (BackendError, OSError) as err:
            raise BackendError(f"{directory} is a LoRA adapter on {base['model']!r}, which cannot be loaded here ({err}); "
                               "fix: install that model (a bundled name) or put it back at that path") from err
        adapted = PeftModel.from_pretrained(backbone, str(directory), is_trainable=trainable).to(target)
        return adapted if trainable else adapted.merge_and_unload()

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids; BOS (if the tokenizer adds one) unless the text already starts with it."""
        bos = getattr(self.tokenizer, "bos_token", None)
        special = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _truncate(self, ids: list[int]) -> tuple[list[int], int]:
        """Keep the last ``max_length`` tokens (the end of a path matters most); returns the cut."""
        if self.max_length is None or len(ids) <= self.max_length:
            return ids, 0
        cut = len(ids) - self.max_length
        return ids[cut:], cut

    def pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) on the model's device, padded on ``padding_side``."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if not s:
                continue
            span = slice(width - len(s), width) if self.padding_side == "left" else slice(0, len(s))
            ids[i, span] = torch.tensor(list(s), dtype=torch.long)
            mask[i, span] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def last_index(attention_mask: torch.Tensor) -> torch.Tensor:
        """Index of each row's last real token, whichever side the padding is on."""
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        return (attention_mask.long() * (positions + 1)).argmax(dim=1)

    # -- model ------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states; position ids from the mask, so left padding shifts nothing."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state

    def token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head's raw output at every position: [batch, length] (float32 unless the head was cast)."""
        return self._head(self.hidden_states(input_ids, attention_mask))

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    def last_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The head's raw output at each row's last real token: [batch]."""
        logits = self.token_logits(input_ids, attention_mask)
        return logits.gather(1, self.last_index(attention_mask).unsqueeze(1)).squeeze(1)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The activated score at each row's last real token: [batch]."""
        return self.activation(self.last_logits(input_ids, attention_mask))

    def _batched(self, seqs: list[list[int]], run: Any, batch_size: int | None) -> list[Any]:
        """Call ``run(ids, mask, rows)`` on length-sorted chunks (less padding); results in input order."""
        size = max(1, batch_size or self.batch_size)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        results: list[Any] = [None] * len(seqs)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), size):
                    chunk = order[start : start + size]
                    ids, mask = self.pad([seqs[i] for i in chunk])
                    for i, value in zip(chunk, run(ids, mask, chunk), strict=True):
                        results[i] = value
        finally:
            self.train(was_training)
        return results

    def position_logits(self, seqs: list[list[int]], batch_size: int | None = None) -> list[torch.Tensor]:
        """The head's raw output at every position of each sequence ([length], float32), in input order.

        Sequences that share a long token prefix (a thought's children, which a search scores together)
        run it once (``shared_prefix``), on top of what ``kv_memo`` kept of it from earlier calls; with
        ``share_prefixes`` off, whole sequences are padded and batched, shortest together.
        """
        from x1.evaluators import shared_prefix

        size = max(1, batch_size or self.batch_size)
        if self.share_prefixes and seqs:
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    # a model that trains changes its weights between calls, so it keeps no caches for the next one
                    memo = None if was_training else self.kv_memo
                    shared = shared_prefix.position_outputs(self.backbone, lambda h: self._head(h).float(), seqs, size,
                                                            self.device, memo)
            finally:
                self.train(was_training)
            if shared is not None:  # None: a backbone without a KV cache; its sequences run whole, padded
                return shared

        def run(ids: torch.Tensor, mask: torch.Tensor, _: list[int]) -> list[torch.Tensor]:
            logits = self.token_logits(ids, mask).float()
            return [row[m.bool()] for row, m in zip(logits, mask, strict=True)]

        return self._batched(seqs, run, batch_size)

    def predict(self, texts: list[str], batch_size: int | None = None) -> list[float]:
        """The activated score of each whole text (batched; padding-independent)."""
        if not texts:
            return []
        seqs = [self._truncate(self.encode(t))[0] or [self.pad_id] for t in texts]
        return [float(self.activation(logits[-1])) for logits in self.position_logits(seqs, batch_size)]

    def unit_scores(self, texts: list[str], batch_size: int | None = None) -> list[float]:
        """Scores in [0, 1] for the Evaluator contract (1 = will succeed)."""
        return self.predict(texts, batch_size)


class ValueModel(HeadedLM):
    """q(s) = tanh(w·h_last + b) ∈ [−1, 1]: the expected outcome of a partial solution (x1's value model)."""

    kind: ClassVar[str] = "value"

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits)

    def unit_scores(self, texts: list[str], batch_size: int | None = None) -> list[float]:
        return [min(1.0, max(0.0, (q + 1.0) / 2.0)) for q in self.predict(texts, batch_size)]


@dataclass
class ValueModelEvaluator:
    """A trained value (or outcome reward) model as an Evaluator: reads prefix + path, scores in [0, 1].

    For the value model the score is (q + 1) / 2, so search code mapping back with 2·s − 1 gets q.
    """

    model: HeadedLM
    name: str = "value"
    batch_size: int | None = None
    model_calls: int = 0

    @property
    def model_tokens(self) -> int:
        return self.model.positions_run

    def evaluate(self, items: list[EvalItem]) -> list[float]:
        if not items:
            return []
        self.model_calls += 1
        return self.model.unit_scores([item.prefix + item.path_text for item in items], self.batch_size)
