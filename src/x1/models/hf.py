"""Hugging Face transformers backend: the one that sees the whole next-token distribution.

It decodes every sequence of a ``generate`` call together (left padding, one KV cache), so
exact token signals (entropy, varentropy, gini, ...) come for free from the full logits, and
``score`` gives teacher-forced logprobs. It loads transformers folders and GGUF files (the
latter de-quantised to float weights by transformers, slowly but with no other runtime).

Logprobs, top logprobs and signals are always those of the model's raw distribution
(temperature 1, no top-p), so they agree with ``score`` whatever the sampling settings.

``adapters`` attaches several PEFT LoRA adapters to the one base model (its weights are held once);
each request picks one by name (``GenerationRequest.adapter``) or the base model (None), and a
``generate`` call decodes each adapter's requests together, switching adapters between groups.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from x1.models._sampling import render_chatml, sample_seed
from x1.models.base import (
    BackendError,
    BackendStats,
    Capabilities,
    Completion,
    FinishReason,
    GenerationRequest,
    truncate_at_stop,
)
from x1.models.hf_loading import attach_adapters, dtype_kwarg, eos_ids, import_torch, load_errors, logits_keep_arg, pick_dtype

MAX_TOP_LOGPROBS = 20


def _token_signals(row: Any) -> dict[str, float]:
    from x1.signals import token_signals

    return token_signals(row)


@dataclass
class _DecodingRow:
    """One sequence being decoded: request ``req`` sample ``index``."""

    req: int
    index: int
    prompt_ids: list[int]
    request: GenerationRequest
    generator: Any = None
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] = field(default_factory=list)
    signals: list[dict[str, float]] = field(default_factory=list)
    done: bool = False
    steps: int = 0  # tokens decoded for this row, including eos and stop-string tokens
    finish: FinishReason = "length"
    stop: str | None = None
    text: str = ""


class TransformersBackend:
    """A causal LM run by transformers on CPU or CUDA (chosen automatically)."""

    def __init__(
        self,
        path: str | Path,
        name: str = "hf",
        device: str | None = None,
        dtype: Any = None,
        gguf_file: str | None = None,
        max_batch: int = 16,
        threads: int | None = None,
        adapters: dict[str, str | Path] | None = None,
        **options: Any,
    ) -> None:
        torch = import_torch()
        threads = threads or options.get("n_threads")  # the llama.cpp backend's name for it
        if threads:
            # Process-wide: on a busy small CPU one thread beats two spinning ones by a wide margin.
            torch.set_num_threads(int(threads))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.name = name
        location = Path(path).expanduser()
        if location.is_file():
            gguf_file = gguf_file or location.name
            location = location.parent
        if not location.exists():
            raise BackendError(f"model path {path} does not exist; fix: pass a transformers folder or a .gguf file")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = pick_dtype(dtype, self.device)
        load: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        with load_errors(path):
            self.tokenizer = AutoTokenizer.from_pretrained(str(location), **load)
            model = AutoModelForCausalLM.from_pretrained(str(location), **{dtype_kwarg(): self.dtype}, **load)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.max_batch = max(1, int(max_batch))
        self.capabilities = Capabilities(
            batching=True,
            logprobs=True,
            top_logprobs=MAX_TOP_LOGPROBS,
            full_distribution=True,
            prefix_reuse=False,
            scoring=True,
            max_batch=self.max_batch,
            adapters=True,
        )
        self.stats = BackendStats()
        self._eos = eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else (min(self._eos) if self._eos else 0)
        self._keep_arg = logits_keep_arg(self.model)  # before PEFT wraps the model: its forward signature hides the argument
        self.adapters: dict[str, Path] = {}  # served name -> folder
        self._peft_names: dict[str, str] = {}  # served name -> PEFT's name (free of the '.' PEFT cannot take)
        if adapters:
            model, self.adapters, self._peft_names = attach_adapters(self.model, adapters, len(self.tokenizer))
            self.model = model.to(self.device).eval()

    # -- adapters ------------------------------------------------------------------------
    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self.adapters:
            loaded = ", ".join(map(repr, self.adapters)) or "none"
            raise BackendError(
                f"unknown adapter {adapter!r}; {self.name} has these adapters loaded: {loaded}; "
                "fix: name one of them, None for the base model, or load it (adapters={NAME: FOLDER})"
            )

    @contextlib.contextmanager
    def _using(self, adapter: str | None) -> Iterator[None]:
        """Run the block with ``adapter`` active, or with every adapter off for the base model."""
        if not self.adapters:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(self._peft_names[adapter], inference_mode=True)
            yield

    # -- encoding and the forward pass ----------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        """Token ids of a prompt; BOS is added by the tokenizer unless the text already starts with it."""
        bos = self.tokenizer.bos_token
        special = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _forward(self, ids: Any, mask: Any, keep: int, past: Any = None, cache: bool = False) -> tuple[Any, Any]:
        """One forward pass with left padding handled through explicit position ids."""
        torch = self._torch
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if past is not None:
            positions = positions[:, -ids.shape[1] :]
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": cache,
        }
        if past is not None:
            kwargs["past_key_values"] = past
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = keep
        out = self.model(**kwargs)
        logits = out.logits[:, -keep:, :].to(torch.float32)
        return logits, getattr(out, "past_key_values", None)

    def _pad_left(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        torch = self._torch
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- generation -----------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """All requests × n decoded together in chunks of ``max_batch`` rows, one adapter's requests at a time."""
        torch = self._torch
        for req in requests:
            self._check_adapter(req.adapter)
        self.stats.calls += 1
        rows: list[_DecodingRow] = []
        for r, req in enumerate(requests):
            prompt_ids = self._encode(req.prompt)
            if not prompt_ids:
                raise BackendError("an empty prompt tokenizes to nothing; fix: pass some prompt text")
            for j in range(req.n):
                row = _DecodingRow(r, j, prompt_ids, req)
                seed = sample_seed(req.seed, j)
                if seed is not None and req.temperature > 0:
                    row.generator = torch.Generator(device=self.device)
                    row.generator.manual_seed(seed)
                rows.append(row)
        groups: dict[str | None, list[int]] = {}  # one adapter is active per forward pass
        for i, row in enumerate(rows):
            groups.setdefault(row.request.adapter, []).append(i)
        with torch.inference_mode():
            for adapter, members in groups.items():
                # Similar prompt lengths together: less padding per chunk.
                order = sorted(members, key=lambda i: len(rows[i].prompt_ids))
                with self._using(adapter):
                    for start in range(0, len(order), self.max_batch):
                        self._decode_chunk([rows[i] for i in order[start : start + self.max_batch]])
        results: list[list[Completion]] = [[] for _ in requests]
        for row in rows:
            results[row.req].append(self._completion(row))
        return results

    def _decode_chunk(self, rows: list[_DecodingRow]) -> None:
        torch = self._torch
        ids, mask = self._pad_left([row.prompt_ids for row in rows])
        self.stats.sequences += len(rows)
        self.stats.prompt_tokens += sum(len(row.prompt_ids) for row in rows)
        for row in rows:
            if row.request.max_tokens <= 0:
                row.done, row.finish = True, "length"
        limit = max(row.request.max_tokens for row in rows)
        temps = torch.tensor([max(row.request.temperature, 0.0) for row in rows], device=self.device)
        top_ps = torch.tensor([row.request.top_p for row in rows], device=self.device)
        past = None
        step_ids = ids
        for _step in range(limit):
            if all(row.done for row in rows):
                break
            logits, past = self._forward(step_ids, mask, keep=1, past=past, cache=True)
            logits = logits[:, -1, :]
            logp = torch.log_softmax(logits, dim=-1)
            chosen = self._choose(logits, temps, top_ps, rows)
            self._record(rows, chosen, logp)
            step_ids = chosen.unsqueeze(1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)

    def _choose(self, logits: Any, temps: Any, top_ps: Any, rows: list[_DecodingRow]) -> Any:
        """Greedy for temperature 0, else temperature + top-p sampling (seeded per row when asked)."""
        torch = self._torch
        chosen = logits.argmax(dim=-1)
        sampling = temps > 0
        if not bool(sampling.any()):
            return chosen
        scaled = logits / torch.where(sampling, temps, torch.ones_like(temps)).unsqueeze(1)
        probs = torch.softmax(scaled, dim=-1)
        sorted_p, sorted_i = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_ps.clamp(min=1e-6).unsqueeze(1)
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        for i, row in enumerate(rows):
            if row.done or not bool(sampling[i]):
                continue
            k = torch.multinomial(sorted_p[i], 1, generator=row.generator)
            chosen[i] = sorted_i[i, k[0]]
        return chosen

    def _record(self, rows: list[_DecodingRow], chosen: Any, logp: Any) -> None:
        """Append each live row's token, logprob, alternatives and signals; detect eos/stop/length."""
        torch = self._torch
        want_top = max((min(r.request.top_logprobs, MAX_TOP_LOGPROBS) for r in rows if not r.done), default=0)
        top_v = top_i = None
        if want_top > 0:
            top_v, top_i = torch.topk(logp, want_top, dim=-1)
            top_v, top_i = top_v.tolist(), top_i.tolist()
        chosen_list = chosen.tolist()
        chosen_lp = logp.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
        need_signals = any(r.request.signals and not r.done for r in rows)
        logp_np = logp.cpu().numpy() if need_signals else None
        # Entropy, varentropy and top-1 of every row, batched from logp already at hand: every step
        # carries them (full signals, with Gini and margin, only where a request asks).
        p = logp.float().exp()
        plogp = torch.nan_to_num(p * logp.float())  # 0·(−inf) → 0
        entropy = -plogp.sum(-1)
        varentropy = (torch.nan_to_num(plogp * logp.float()).sum(-1) - entropy * entropy).clamp_min(0.0)
        cheap = torch.stack([entropy.clamp_min(0.0), varentropy, p.max(-1).values], dim=1).tolist()
        for i, row in enumerate(rows):
            if row.done:
                continue
            self.stats.generated_tokens += 1
            row.steps += 1
            token = chosen_list[i]
            if token in self._eos:
                row.done, row.finish = True, "eos"
                continue
            row.ids.append(token)
            row.logprobs.append(float(chosen_lp[i]))
            k = min(row.request.top_logprobs, MAX_TOP_LOGPROBS)
            if k > 0 and top_v is not None and top_i is not None:
                alts: dict[str, float] = {}
                for tid, value in zip(top_i[i][:k], top_v[i][:k], strict=True):
                    alts.setdefault(self.tokenizer.decode([tid]), float(value))
                row.top.append(alts)
            if row.request.signals and logp_np is not None:
                row.signals.append(_token_signals(logp_np[i]))
            else:
                row.signals.append(dict(zip(("entropy", "varentropy", "top1"), cheap[i], strict=True)))
            row.text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            if row.request.stop:
                kept, hit = truncate_at_stop(row.text, row.request.stop)
                if hit is not None:
                    row.done, row.finish, row.stop = True, "stop", hit
                    self._cut_to(row, kept)
                    continue
            if len(row.ids) >= row.request.max_tokens:
                row.done, row.finish = True, "length"

    def _cut_to(self, row: _DecodingRow, kept: str) -> None:
        """Drop the tokens that lie wholly inside the stop string (a token straddling it stays)."""
        n = len(row.ids)
        while n > 0 and len(self.tokenizer.decode(row.ids[: n - 1], skip_special_tokens=True)) >= len(kept):
            n -= 1
        del row.ids[n:], row.logprobs[n:]
        del row.top[n:], row.signals[n:]
        row.text = kept

    def _completion(self, row: _DecodingRow) -> Completion:
        return Completion(
            text=row.text,
            token_ids=row.ids,
            logprobs=row.logprobs,
            top_logprobs=row.top,
            signals=row.signals,
            finish_reason=row.finish,
            stop=row.stop,
            prompt_tokens=len(row.prompt_ids),
            generated_tokens=row.steps,
        )

    # -- scoring --------------------------------------------------------------------------
    def score(self, prompts: list[str], continuations: list[str], adapter: str | None = None) -> list[list[float]]:
        """Teacher-forced logprob of each continuation token (continuation tokenized on its own), under ``adapter``."""
        torch = self._torch
        if len(prompts) != len(continuations):
            raise BackendError(f"score got {len(prompts)} prompts but {len(continuations)} continuations")
        self._check_adapter(adapter)
        self.stats.calls += 1
        pairs = [
            (self._encode(p), list(self.tokenizer(c, add_special_tokens=False)["input_ids"]))
            for p, c in zip(prompts, continuations, strict=True)
        ]
        results: list[list[float]] = [[] for _ in pairs]
        todo = [i for i, (p, c) in enumerate(pairs) if c]
        with torch.inference_mode(), self._using(adapter):
            for start in range(0, len(todo), self.max_batch):
                chunk = todo[start : start + self.max_batch]
                seqs = [pairs[i][0] + pairs[i][1] for i in chunk]
                ids, mask = self._pad_left(seqs)
                width = max(len(pairs[i][1]) for i in chunk)
                logits, _ = self._forward(ids, mask, keep=width + 1)
                logp = torch.log_softmax(logits[:, :-1, :], dim=-1)  # position t predicts t+1
                targets = ids[:, -width:]
                picked = logp.gather(2, targets.unsqueeze(2)).squeeze(2).tolist()
                for row, i in enumerate(chunk):
                    c = len(pairs[i][1])
                    results[i] = [float(v) for v in picked[row][width - c :]]
                    self.stats.scored_tokens += c
                self.stats.prompt_tokens += sum(len(s) for s in seqs)
        return results

    # -- chat -----------------------------------------------------------------------------
    def format_chat(self, messages: list[dict[str, str]]) -> str:
        """The tokenizer's own chat template; ChatML when the model ships none."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return str(text)
        return render_chatml(messages)

    def close(self) -> None:
        """Free the weights (and the CUDA cache) now rather than at garbage collection."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
