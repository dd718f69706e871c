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
from collections.abc import Sequence

import torch

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


def chunks(groups: list[tuple[int, list[int]]], max_rows: int) -> list[list[tuple[int, list[int]]]]:
    """Groups by prefix length (less padding), cut into chunks of at most ``max_rows`` members (a larger group stays whole)."""
    out: list[list[tuple[int, list[int]]]] = []
    rows = max_rows
    for group in sorted(groups, key=lambda g: g[0]):
        if rows + len(group[1]) > max_rows:
            out.append([])
            rows = 0
        out[-1].append(group)
        rows += len(group[1])
    return out


def _cache_argument(backbone: torch.nn.Module) -> str:
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def hidden_after_prefixes(backbone: torch.nn.Module, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                          device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """For each (prefix, suffixes) group: (the prefix's hidden states [p, h], its suffixes' [k, s, h]);
    None when the backbone keeps no KV cache (then the caller pads whole sequences instead).

    Two forward calls for all the groups: the prefixes together, then every suffix on a copy of its
    group's cache rows. Both are right-padded and masked: a pad only follows a row's real tokens, so
    it changes none of them, and each suffix's positions continue from its own prefix's length.
    """
    prefixes = [list(prefix) for prefix, _ in groups]
    ids, mask = _right_padded(prefixes)
    out = backbone(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)  # transformers 5: cache; 4: past_key_values
    if cache is None:
        return None
    rows = [g for g, (_, suffixes) in enumerate(groups) for _ in suffixes]
    cache.batch_select_indices(torch.tensor(rows, device=device))
    suffixes = [list(s) for _, group_suffixes in groups for s in group_suffixes]
    tail_ids, tail_mask = _right_padded(suffixes)
    starts = torch.tensor([len(prefixes[g]) for g in rows]).unsqueeze(1)
    positions = starts + torch.arange(tail_ids.shape[1]).unsqueeze(0)
    tail = backbone(input_ids=tail_ids.to(device), attention_mask=torch.cat([mask[rows], tail_mask], dim=1).to(device),
                    position_ids=positions.to(device), use_cache=True, **{_cache_argument(backbone): cache})
    results, row = [], 0
    for g, (_, group_suffixes) in enumerate(groups):
        results.append((out.last_hidden_state[g, : len(prefixes[g])], tail.last_hidden_state[row : row + len(group_suffixes)]))
        row += len(group_suffixes)
    return results


def _right_padded(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
