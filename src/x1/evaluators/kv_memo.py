"""Keep recently scored paths' KV caches, so an evaluator's next call runs only the new steps.

A search scores a thought when it is made and scores its children one round later, and each child's
path is that thought's path plus one step. Within one call ``shared_prefix`` runs the parent's path
once for all its children; this memo keeps the path from the call that scored the parent, so the
next call does not run it again either. Lookups go by the token prefix, block by block, so a path
that only shares the system prompt with a kept one still reuses that much.

Entries are kept least recently used first out, within a byte budget (an eighth of the machine's
memory, at most 4 GiB, unless ``?cache_mb=`` says otherwise): a 200-token path of SmolLM2-135M in
float32 is about 9 MB. Only a model loaded for inference keeps one, because its
weights never change; a model that trains would read caches its old weights made.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

import torch

from x1.evaluators.shared_prefix import common_prefix_len

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [kv_heads, length, head_dim]
BLOCK = 16  # tokens: lookups try prefixes of whole blocks, longest first, then extend to the exact common prefix
CANDIDATES = 8  # kept paths compared at the longest shared block: siblings share blocks, and one of them may share more


def default_budget_bytes() -> int:
    """An eighth of the machine's memory, at most 4 GiB (1 GiB where the size is unknown).

    MCTS with 24 problems in flight (the scaling study's N = 4 cell, replayed least recently used
    out by ``benchmarks/kv_memo_budget.py``) finds an expansion's parent kept 50% of the time with
    1 GiB, 81% with 2 and 100% with 4; beam search and DVTS at N = 4 need 1 GiB for 100%.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 30
    return int(min(4 << 30, max(total // 8, 256 << 20)))


@dataclass
class Kept:
    """One scored path: its tokens, its KV cache and the head's output at each of its positions."""

    tokens: tuple[int, ...]
    kv: KV
    logits: torch.Tensor
    nbytes: int


class KVMemo:
    """Paths' KV caches by token prefix, least recently used evicted first, within ``budget_bytes``."""

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = default_budget_bytes() if budget_bytes is None else budget_bytes
        self._kept: OrderedDict[tuple[int, ...], Kept] = OrderedDict()
        # hash of a whole-block prefix -> the kept paths that start with it, oldest first
        self._by_block: dict[int, dict[tuple[int, ...], None]] = {}
        self.used_bytes = 0
        self.reused_tokens = 0  # what callers took from kept paths instead of running it (a statistic)

    def __len__(self) -> int:
        return len(self._kept)

    def find(self, tokens: Sequence[int]) -> tuple[Kept | None, int]:
        """(a kept path, how many of ``tokens`` it starts with), the longest found; (None, 0) below one block.

        The longest whole-block prefix that any kept path shares decides where to look; of the paths
        that share it (the newest ``CANDIDATES``), the one that shares most wins.
        """
        exact = self._kept.get(tuple(tokens))
        if exact is not None:
            self._kept.move_to_end(exact.tokens)
            return exact, len(tokens)
        for n in range(len(tokens) // BLOCK * BLOCK, 0, -BLOCK):
            paths = self._by_block.get(hash(tuple(tokens[:n])))
            if not paths:
                continue
            best, shared = None, 0
            for key in islice(reversed(paths), CANDIDATES):
                common = common_prefix_len(key, tokens)
                if common > shared:
                    best, shared = self._kept[key], common
            if best is not None and shared >= n:  # not a hash collision
                self._kept.move_to_end(best.tokens)
                return best, shared
        return None, 0

    def put(self, tokens: Sequence[int], kv: KV, logits: torch.Tensor) -> None:
        key = tuple(tokens)
        if key in self._kept:
            self._kept.move_to_end(key)
            return
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.budget_bytes:
            return
        while self._kept and self.used_bytes + nbytes > self.budget_bytes:
            self._evict()
        self._kept[key] = Kept(key, kv, logits, nbytes)
        self.used_bytes += nbytes
        for n in range(BLOCK, len(key) + 1, BLOCK):
            self._by_block.setdefault(hash(key[:n]), {})[key] = None

    def clear(self) -> None:
        self._kept.clear()
        self._by_block.clear()
        self.used_bytes = 0

    def _evict(self) -> None:
        key, kept = self._kept.popitem(last=False)
        self.used_bytes -= kept.nbytes
        for n in range(BLOCK, len(key) + 1, BLOCK):
            h = hash(key[:n])
            paths = self._by_block[h]
            del paths[key]
            if not paths:
                del self._by_block[h]
