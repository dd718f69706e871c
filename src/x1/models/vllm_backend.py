"""vLLM in-process backend: continuous batching and automatic prefix caching on a CUDA GPU.

Tree search re-sends a growing path as the prompt of every step; with
``enable_prefix_caching=True`` (the default here) vLLM keeps the KV blocks of shared prefixes, so
only the new suffix is prefilled (``RequestOutput.num_cached_tokens`` reports how much was reused).
vLLM is optional and imported only when this backend is built.

Scoring (``score``: teacher-forced ``prompt_logprobs``) needs ``enable_prefix_caching=False``, and
a backend with prefix caching on declares ``scoring=False`` and refuses to score. Prompt logprobs
and prefix caching do not mix reliably across the vLLM versions x1 accepts: V0 crashed or
returned logprobs for the wrong positions on a cache hit (vllm-project/vllm#3251, #3914, #8268);
early V1 refused the request ("Prefix caching with prompt logprobs not yet supported", #13409);
later V1 skips the cache for such requests (#13949), yet the logprobs still depend on request
order with caching on (#42019, open). x1 scores exactly the text it just generated, whose blocks
are then cached. For search plus scoring, build two backends: one with caching for the policy,
one with ``enable_prefix_caching=False`` for the evaluator.

``adapters`` (name -> PEFT LoRA folder) turns on vLLM's multi-LoRA serving: each request names
its adapter (``GenerationRequest.adapter``) and goes out with that adapter's ``LoRARequest``, so
requests for different adapters and the base model share one batch. Written against vLLM's
documented API (``LLM(enable_lora=True)``, ``generate(..., lora_request=[...])``); not tested here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from x1.models.base import (
    BackendError,
    BackendStats,
    Capabilities,
    Completion,
    FinishReason,
    GenerationRequest,
    truncate_at_stop,
)
from x1.signals import signals_from_top_logprobs

MAX_TOP_LOGPROBS = 20  # vLLM's default max_logprobs


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank


def _lora_rank(folders: list[Path]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits every adapter (16, vLLM's default, at least)."""
    rank = 16
    for folder in folders:
        config = json.loads((folder / "adapter_config.json").read_text())
        ranks = [int(config.get("r", 8)), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
        rank = max(rank, *ranks)
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def _logprob_value(entry: Any) -> float:
    """vLLM's ``Logprob`` objects carry ``.logprob``; older builds returned bare floats."""
    return float(getattr(entry, "logprob", entry))


class VLLMBackend:
    """``vllm.LLM``, prefix caching on unless ``enable_prefix_caching=False`` (then it can score);
    ``engine_kwargs`` go straight to ``LLM`` (e.g. ``gpu_memory_utilization``)."""

    def __init__(self, model: str, adapters: dict[str, str | Path] | None = None, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as err:
            raise BackendError(
                f"vLLM is not installed (cannot load {model!r}); fix: pip install 'x1[vllm]' on a machine with a CUDA GPU"
            ) from err
        self._vllm = vllm
        name = engine_kwargs.pop("name", None)
        for ignored in ("model_name", "max_batch"):
            engine_kwargs.pop(ignored, None)
        engine_kwargs.setdefault("enable_prefix_caching", True)
        self.prefix_caching = bool(engine_kwargs["enable_prefix_caching"])
        self.name = str(name or model)
        self.adapters: dict[str, Path] = {str(n): Path(p).expanduser() for n, p in (adapters or {}).items()}
        for adapter, folder in self.adapters.items():
            if not adapter or not (folder / "adapter_config.json").is_file():
                raise BackendError(
                    f"adapter {adapter!r}: {folder} is not a PEFT adapter folder (no adapter_config.json); "
                    "fix: pass the folder of a LoRA run saved unmerged (lora.merge_on_save: false)"
                )
        self._lora: dict[str, Any] = {}
        if self.adapters:
            from vllm.lora.request import LoRARequest

            engine_kwargs["enable_lora"] = True
            engine_kwargs.setdefault("max_loras", len(self.adapters))  # all of them resident on the GPU at once
            engine_kwargs.setdefault("max_lora_rank", _lora_rank(list(self.adapters.values())))
            # lora_int_id must be unique and > 0 (0 means no adapter).
            self._lora = {a: LoRARequest(a, i + 1, str(folder)) for i, (a, folder) in enumerate(self.adapters.items())}
        try:
            self.llm = vllm.LLM(model=model, **engine_kwargs)
        except Exception as err:  # vLLM raises many types; the message is what helps
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise BackendError(
                f"vLLM could not load {model!r}: {first}; "
                "fix: check the model path/name, free GPU memory, or lower gpu_memory_utilization / max_model_len"
            ) from err
        self.tokenizer = self.llm.get_tokenizer()
        self.stats = BackendStats()
        self.capabilities = Capabilities(
            batching=True,
            logprobs=True,
            top_logprobs=MAX_TOP_LOGPROBS,
            full_distribution=False,
            prefix_reuse=self.prefix_caching,
            scoring=not self.prefix_caching,  # prompt logprobs are not trustworthy with the cache on (module note)
            max_batch=1 << 12,
            adapters=True,
        )

    def _lora_request(self, adapter: str | None) -> Any:
        """vLLM's ``LoRARequest`` for ``adapter``; None means the base model."""
        if adapter is None:
            return None
        if adapter not in self._lora:
            loaded = ", ".join(map(repr, self._lora)) or "none"
            raise BackendError(
                f"unknown adapter {adapter!r}; {self.name} has these adapters loaded: {loaded}; "
                "fix: name one of them, None for the base model, or load it (adapters={NAME: FOLDER})"
            )
        return self._lora[adapter]

    def _params(self, req: GenerationRequest) -> Any:
        return self._vllm.SamplingParams(
            n=req.n,
            temperature=max(req.temperature, 0.0),
            top_p=req.top_p,
            max_tokens=req.max_tokens,
            stop=list(req.stop) or None,
            seed=req.seed,
            # vLLM returns the top-k plus the sampled token at each position; 1 still gives the chosen logprob.
            logprobs=max(1, min(MAX_TOP_LOGPROBS if req.signals else req.top_logprobs, MAX_TOP_LOGPROBS)),
        )

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """One ``LLM.generate`` call for the whole batch, one ``SamplingParams`` (and adapter) per request."""
        loras = [self._lora_request(r.adapter) for r in requests]
        self.stats.calls += 1
        live = [i for i, r in enumerate(requests) if r.n > 0]
        results: list[list[Completion]] = [[] for _ in requests]
        if not live:
            return results
        extra: dict[str, Any] = {"lora_request": [loras[i] for i in live]} if self._lora else {}
        outputs = self.llm.generate(
            [requests[i].prompt for i in live],
            sampling_params=[self._params(requests[i]) for i in live],
            use_tqdm=False,
            **extra,
        )
        for i, out in zip(live, outputs, strict=True):
            results[i] = self._completions(requests[i], out)
        return results

    def _completions(self, req: GenerationRequest, out: Any) -> list[Completion]:
        prompt_len = len(out.prompt_token_ids or [])
        cached = int(getattr(out, "num_cached_tokens", 0) or 0)
        prefilled = max(prompt_len - cached, 0)
        self.stats.prompt_tokens += prefilled
        self.stats.reused_prompt_tokens += cached
        completions = []
        for k, seq in enumerate(out.outputs):
            ids = list(seq.token_ids)
            chosen: list[float] = []
            top: list[dict[str, float]] = []
            signals: list[dict[str, float]] = []
            for tid, position in zip(ids, seq.logprobs or [], strict=False):
                chosen.append(_logprob_value(position[tid]) if tid in position else float("nan"))
                ranked = sorted(position.items(), key=lambda kv: -_logprob_value(kv[1]))
                if req.top_logprobs > 0:
                    top.append({self._token_text(t, e): _logprob_value(e) for t, e in ranked[: req.top_logprobs]})
                if req.signals:
                    # Approximate (top-k only, the tail lumped together): vLLM does not expose full distributions.
                    signals.append(signals_from_top_logprobs({str(t): _logprob_value(e) for t, e in ranked}))
            finish: FinishReason
            stop: str | None = None
            text = seq.text
            if seq.finish_reason == "length":
                finish = "length"
            elif isinstance(seq.stop_reason, str):
                finish, stop = "stop", seq.stop_reason
            else:  # None: EOS; an int: a stop token id
                finish = "eos"
                text, hit = truncate_at_stop(text, req.stop)
                if hit is not None:
                    finish, stop = "stop", hit
            self.stats.sequences += 1
            self.stats.generated_tokens += len(ids)
            completions.append(
                Completion(
                    text=text,
                    token_ids=ids,
                    logprobs=chosen,
                    top_logprobs=top,
                    signals=signals,
                    finish_reason=finish,
                    stop=stop,
                    prompt_tokens=prefilled if k == 0 else 0,  # n samples share one prefill
                    generated_tokens=len(ids),
                )
            )
        return completions

    def _token_text(self, token_id: int, entry: Any) -> str:
        text = getattr(entry, "decoded_token", None)
        return text if text is not None else self.tokenizer.decode([token_id])

    def score(self, prompts: list[str], continuations: list[str], adapter: str | None = None) -> list[list[float]]:
        """Teacher-forced logprobs via ``prompt_logprobs=0`` over prompt + continuation token ids, under ``adapter``."""
        if len(prompts) != len(continuations):
            raise BackendError(f"score got {len(prompts)} prompts but {len(continuations)} continuations")
        if self.prefix_caching:
            raise BackendError(
                f"{self.name} has prefix caching on, and vLLM's prompt logprobs are unreliable with it (see the "
                "x1.models.vllm_backend note); fix: score with a second backend built with enable_prefix_caching=False"
            )
        lora = self._lora_request(adapter)
        self.stats.calls += 1
        pairs = [
            (self.tokenizer.encode(p), self.tokenizer.encode(c, add_special_tokens=False))
            for p, c in zip(prompts, continuations, strict=True)
        ]
        todo = [i for i, (_, c) in enumerate(pairs) if c]
        results: list[list[float]] = [[] for _ in pairs]
        if not todo:
            return results
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": pairs[i][0] + pairs[i][1]} for i in todo],
                sampling_params=params,
                use_tqdm=False,
                **({"lora_request": lora} if lora is not None else {}),
            )
        except (ValueError, NotImplementedError) as err:
            raise BackendError(f"vLLM refused prompt logprobs: {err}; fix: prompt + continuation must fit max_model_len") from err
        for i, out in zip(todo, outputs, strict=True):
            prompt_ids, cont_ids = pairs[i]
            rows = list(out.prompt_logprobs or [])[len(prompt_ids) :]
            results[i] = [_logprob_value(row[t]) for t, row in zip(cont_ids, rows, strict=True)]
            self.stats.scored_tokens += len(cont_ids)
            self.stats.prompt_tokens += len(prompt_ids) + len(cont_ids)
        return results

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        """The model's own chat template, through vLLM's tokenizer."""
        return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    def close(self) -> None:
        """Drop the engine so its GPU memory can be reclaimed."""
        self.llm = None
        import gc

        gc.collect()
