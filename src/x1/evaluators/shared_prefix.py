"""Score paths that share a prefix by running the prefix once: what a search asks of its evaluator.

Beam search, DVTS and MCTS score the children of a thought together, and every child's path is its
parent's path plus one new step. Padded batching runs each whole path again (a 12-step path, 12
times over a beam's life); here the children's common token prefix runs once, its KV cache is
repeated for each child, and only the new tokens run on top of it. A causal LM's output at a position
depends only on the tokens before it, so the scores are the same up to float rounding.

Transformers' batched forward does not share prefixes between rows, and vLLM's prefix caching is
for generation servers, not for a scoring head on a local backbone, so this is written here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from x1.evaluators.kv_memo import KV, KVMemo

MIN_SHARED = 16  # tokens: a shorter common prefix (a BOS, a chat-template header) is not worth a second forward call
GROUP_COST = 64  # tokens: what a group's own two forward calls cost beside the padded batches, in tokens run


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan(seqs: Sequence[Sequence[int]], max_group: int, min_shared: int = MIN_SHARED) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """(groups, singles): groups of sequence indices with the length of the prefix they share, and the rest.

    Sorting puts siblings next to each other, and a run of sorted sequences shares the shortest prefix
    two neighbours in it share. Which runs to make is a small dynamic programme over the sorted order
    that minimises the tokens run (a group costs its prefix once, each member its own tail, plus
    ``GROUP_COST`` for its two extra forward calls): so the children of one thought group on their
    parent's whole path, not every problem's paths on the system prompt they all start with. Each
    member keeps at least one token of its own after the shared prefix.
    """
    order = sorted(range(len(seqs)), key=lambda i: list(seqs[i]))
    n = len(order)
    lengths = [len(seqs[i]) for i in order]
    neighbours = [common_prefix_len(seqs[order[k]], seqs[order[k + 1]]) for k in range(n - 1)]
    best = [0.0] + [float("inf")] * n  # best[j]: fewest tokens to run the first j sorted sequences
    choice = [(0, 0)] * (n + 1)  # (start of the last run, its shared prefix; 0: a single)
    for end in range(1, n + 1):
        best[end], choice[end] = best[end - 1] + lengths[end - 1], (end - 1, 0)
        shared, shortest = lengths[end - 1], lengths[end - 1]
        for start in range(end - 2, max(-1, end - 1 - max_group), -1):
            shared, shortest = min(shared, neighbours[start]), min(shortest, lengths[start])
            prefix = min(shared, shortest - 1)
            if prefix < min_shared:
                break
            cost = best[start] + GROUP_COST + prefix + sum(lengths[start:end]) - (end - start) * prefix
            if cost < best[end]:
                best[end], choice[end] = cost, (start, prefix)
    groups: list[tuple[int, list[int]]] = []
    singles: list[int] = []
    end = n
    while end > 0:
        start, prefix = choice[end]
        if prefix:
            groups.append((prefix, order[start:end]))
        else:
            singles.append(order[start])
        end = start
    return groups[::-1], singles[::-1]


def _cache_argument(backbone: torch.nn.Module) -> str:
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A transformers cache's (keys, values) per layer, each [batch, kv_heads, length, head_dim]."""
    if hasattr(cache, "layers"):  # transformers 5
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers 4


def forward_rows(backbone: torch.nn.Module, rows: Sequence[tuple[KV | None, Sequence[int]]], device: torch.device,
                 keep: Sequence[bool]) -> tuple[list[torch.Tensor], list[KV | None]] | None:
    """Run each row's new tokens on its own past KV cache (or none) in one forward call.

    Returns each row's hidden states at its new tokens ([new, hidden]) and, where ``keep`` says so, its
    whole KV cache (past and new); None when the backbone keeps no KV cache (then the caller pads whole
    sequences instead). Pasts and new tokens are both right-padded and masked: a pad follows a row's
    real tokens, so it changes none of them, and each row's positions continue from its own past.
    """
    past_lens = [0 if kv is None else int(kv[0][0].shape[1]) for kv, _ in rows]
    width = max(past_lens)
    ids, new_mask = _right_padded([tokens for _, tokens in rows])
    positions = torch.tensor(past_lens).unsqueeze(1) + torch.arange(ids.shape[1]).unsqueeze(0)
    past_mask = torch.zeros((len(rows), width), dtype=torch.long)
    arguments: dict[str, Any] = {}
    if width:
        from transformers import DynamicCache

        cache = DynamicCache()
        some = next(kv for kv, _ in rows if kv is not None)
        for layer, (k0, v0) in enumerate(some):
            keys = k0.new_zeros((len(rows), k0.shape[0], width, k0.shape[2]))
            values = v0.new_zeros((len(rows), v0.shape[0], width, v0.shape[2]))
            for r, (kv, _) in enumerate(rows):
                if kv is not None:
                    keys[r, :, : past_lens[r]] = kv[layer][0]
                    values[r, :, : past_lens[r]] = kv[layer][1]
            cache.update(keys, values, layer)
        for r, n in enumerate(past_lens):
            past_mask[r, :n] = 1
        arguments[_cache_argument(backbone)] = cache
    out = backbone(input_ids=ids.to(device), attention_mask=torch.cat([past_mask, new_mask], dim=1).to(device),
                   position_ids=positions.to(device), use_cache=True, **arguments)
    after = getattr(out, "cache", None) or getattr(out, "past_key_values", None)  # transformers 5: cache; 4: past_key_values
    if after is None:
        return None
    layers = _layers(after)
    hidden, kept = [], []
    for r, (_, tokens) in enumerate(rows):
        hidden.append(out.last_hidden_state[r, : len(tokens)])
        if not keep[r]:
            kept.append(None)
            continue
        spans = (slice(0, past_lens[r]), slice(width, width + len(tokens)))
        kept.append([(torch.cat([k[r, :, span] for span in spans], dim=1), torch.cat([v[r, :, span] for span in spans], dim=1))
                     for k, v in layers])
    return hidden, kept


def position_outputs(backbone: torch.nn.Module, head: Callable[[torch.Tensor], torch.Tensor], seqs: Sequence[Sequence[int]],
                     size: int, device: torch.device, memo: KVMemo | None = None) -> list[torch.Tensor] | None:
    """The head's output at every position of each sequence, prefixes shared (``plan``) and kept (``memo``).

    Two forward calls per chunk of rows. The first runs each group's shared prefix, and each sequence
    that has no siblings here whole, on top of what the memo holds of it. The second runs the groups'
    members' own tokens on their prefix's cache. Every scored path then goes into the memo for the
    next call, whose children extend it. None when the backbone keeps no KV cache.
    """
    results: list[Any] = [None] * len(seqs)
    todo = list(range(len(seqs)))
    if memo is not None:  # paths kept whole (scored before) need no forward at all
        for i, seq in enumerate(seqs):
            kept, n = memo.find(seq)
            if kept is not None and n == len(seq):
                results[i] = kept.logits[:n]
                memo.reused_tokens += n
        todo = [i for i in todo if results[i] is None]
    planned, lone = plan([seqs[i] for i in todo], size)
    groups = [(shared, [todo[k] for k in members]) for shared, members in planned]
    singles = [todo[k] for k in lone]
    # A job: tokens to have a cache and outputs for: a group's shared prefix, or a lone sequence whole.
    jobs = [list(seqs[members[0]][:shared]) for shared, members in groups] + [list(seqs[i]) for i in singles]
    job_kv: list[KV | None] = [None] * len(jobs)
    job_logits: list[torch.Tensor | None] = [None] * len(jobs)
    for j, tokens in enumerate(jobs):
        kept, n = memo.find(tokens) if memo is not None else (None, 0)
        if kept is not None:  # its first n tokens' cache and outputs: views, not copies
            n = min(n, len(tokens))
            job_kv[j], job_logits[j] = [(k[:, :n], v[:, :n]) for k, v in kept.kv], kept.logits[:n]
            memo.reused_tokens += n  # type: ignore[union-attr]
    to_run = [j for j, tokens in enumerate(jobs) if job_logits[j] is None or len(job_logits[j]) < len(tokens)]  # type: ignore[arg-type]
    keep_job = [j < len(groups) or memo is not None for j in range(len(jobs))]
    for chunk in _by_length(to_run, lambda j: len(jobs[j]), size):
        past = [len(job_logits[j]) if job_logits[j] is not None else 0 for j in chunk]  # type: ignore[arg-type]
        done = forward_rows(backbone, [(job_kv[j], jobs[j][n:]) for j, n in zip(chunk, past, strict=True)], device,
                            [keep_job[j] for j in chunk])
        if done is None:
            return None
        for j, n, hidden, kv in zip(chunk, past, *done, strict=True):
            new = head(hidden)
            job_logits[j] = torch.cat([job_logits[j], new]) if n else new  # type: ignore[list-item]
            job_kv[j] = kv
    ran = set(to_run)
    for j, i in enumerate(singles, start=len(groups)):
        results[i] = job_logits[j]
        if memo is not None and j in ran:  # one the memo held whole is kept already (its cache here is a view of it)
            memo.put(seqs[i], job_kv[j], job_logits[j])  # type: ignore[arg-type]
    members = [(g, i) for g, (_, group) in enumerate(groups) for i in group]
    for chunk in _by_length(range(len(members)), lambda m: len(seqs[members[m][1]]), size):
        rows = [(job_kv[members[m][0]], seqs[members[m][1]][groups[members[m][0]][0]:]) for m in chunk]
        done = forward_rows(backbone, rows, device, [memo is not None] * len(chunk))
        if done is None:
            return None
        for m, hidden, kv in zip(chunk, *done, strict=True):
            g, i = members[m]
            results[i] = torch.cat([job_logits[g], head(hidden)])  # type: ignore[list-item]
            if memo is not None and kv is not None:
                memo.put(seqs[i], kv, results[i])
    return results


def _by_length(indices: Iterable[int], length: Callable[[int], int], size: int) -> list[list[int]]:
    """Chunks of at most ``size`` indices, shortest together (less padding)."""
    order = sorted(indices, key=length)
    return [order[k : k + size] for k in range(0, len(order), size)]


def _right_padded(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
