"""Keep recently scored paths' KV caches, so an evaluator's next call runs only the new steps.

A search scores a thought when it is made and scores its children one round later, and each child's
path is that thought's path plus one step. Within one call ``shared_prefix`` runs the parent's path
once for all its children; this memo keeps the path from the call that scored the parent, so the
next call does not run it again either. Lookups go by the token prefix, block by block, so a path
that only shares the system prompt with a kept one still reuses that much.

Entries are kept least recently used first out, within a byte budget: a 200-token path of
SmolLM2-135M in float32 is about 9 MB. By default every memo of the process draws from one shared
budget (an eighth of the machine's memory, at most 4 GiB), so a run or a server that loads a value
model, a PRM and an ORM together keeps no more than one alone would; the least recently used entry
of any of them goes first. ``?cache_mb=`` gives an evaluator a budget of its own. Only a model loaded
for inference keeps one, because its weights never change; a model that trains would read caches its
old weights made.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
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
    used_at: int = 0  # the pool's clock at the last put or find: which memo's oldest entry is oldest


class MemoPool:
    """One byte budget for several memos; making room evicts the least recently used entry of any of them.

    The lock is the pool's, not a memo's: the serve batchers run each evaluator on a thread of its own,
    and two of them may draw from one pool at once.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.lock = threading.RLock()
        self._memos: weakref.WeakSet[KVMemo] = weakref.WeakSet()  # a memo dropped with its evaluator frees its share
        self._clock = itertools.count(1)

    @property
    def used_bytes(self) -> int:
        return sum(memo.used_bytes for memo in list(self._memos))

    def join(self, memo: KVMemo) -> None:
        self._memos.add(memo)

    def tick(self) -> int:
        return next(self._clock)

    def make_room(self, nbytes: int) -> bool:
        """Evict, oldest first across the pool's memos, until ``nbytes`` more fit; False if they never would."""
        if nbytes > self.budget_bytes:
            return False
        used = self.used_bytes
        while used + nbytes > self.budget_bytes:
            holders = [memo for memo in list(self._memos) if memo._kept]
            if not holders:
                return False
            oldest = min(holders, key=lambda memo: next(iter(memo._kept.values())).used_at)
            used -= oldest._evict()
        return True


_shared_pool: MemoPool | None = None
_shared_pool_guard = threading.Lock()


def shared_pool() -> MemoPool:
    """The process's pool for memos without a budget of their own (``default_budget_bytes``), made on first use."""
    global _shared_pool
    with _shared_pool_guard:
        if _shared_pool is None:
            _shared_pool = MemoPool(default_budget_bytes())
        return _shared_pool


class KVMemo:
    """Paths' KV caches by token prefix, least recently used evicted first.

    ``budget_bytes`` gives the memo a pool of its own; without it, it shares the process's pool.
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.pool = shared_pool() if budget_bytes is None else MemoPool(budget_bytes)
        self.pool.join(self)
        self._kept: OrderedDict[tuple[int, ...], Kept] = OrderedDict()
        # hash of a whole-block prefix -> the kept paths that start with it, oldest first
        self._by_block: dict[int, dict[tuple[int, ...], None]] = {}
        self.used_bytes = 0  # this memo's entries; the pool's budget bounds the sum over its memos
        self.reused_tokens = 0  # what callers took from kept paths instead of running it (a statistic)

    @property
    def budget_bytes(self) -> int:
        return self.pool.budget_bytes

    def __len__(self) -> int:
        return len(self._kept)

    def _touch(self, kept: Kept) -> None:
        self._kept.move_to_end(kept.tokens)
        kept.used_at = self.pool.tick()

    def find(self, tokens: Sequence[int]) -> tuple[Kept | None, int]:
        """(a kept path, how many of ``tokens`` it starts with), the longest found; (None, 0) below one block.

        The longest whole-block prefix that any kept path shares decides where to look; of the paths
        that share it (the newest ``CANDIDATES``), the one that shares most wins.
        """
        with self.pool.lock:
            return self._find(tokens)

    def _find(self, tokens: Sequence[int]) -> tuple[Kept | None, int]:
        exact = self._kept.get(tuple(tokens))
        if exact is not None:
            self._touch(exact)
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
                self._touch(best)
                return best, shared
        return None, 0

    def put(self, tokens: Sequence[int], kv: KV, logits: torch.Tensor) -> None:
        key = tuple(tokens)
        with self.pool.lock:
            if key in self._kept:
                self._touch(self._kept[key])
                return
            nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
            if not self.pool.make_room(nbytes):
                return
            self._kept[key] = Kept(key, kv, logits, nbytes, self.pool.tick())
            self.used_bytes += nbytes
            for n in range(BLOCK, len(key) + 1, BLOCK):
                self._by_block.setdefault(hash(key[:n]), {})[key] = None

    def clear(self) -> None:
        with self.pool.lock:
            self._kept.clear()
            self._by_block.clear()
            self.used_bytes = 0

    def _evict(self) -> int:
        """Drop this memo's least recently used entry; its size (the pool calls this with its lock held)."""
        key, kept = self._kept.popitem(last=False)
        self.used_bytes -= kept.nbytes
        for n in range(BLOCK, len(key) + 1, BLOCK):
            h = hash(key[:n])
            paths = self._by_block[h]
            del paths[key]
            if not paths:
                del self._by_block[h]
        return kept.nbytes
