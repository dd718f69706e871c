"""The prefix cache: which tokens each of llama.cpp's sequence slots holds, and which slot to reuse or evict.

Each of ``n_seq_max`` slots remembers the tokens its KV cells hold. A new prompt is matched
against every slot by longest common token prefix (``best_prefix``); a free slot is taken empty
first, else a cached one is evicted (``victim``): one the caller has *retired* (``rank``: no prompt
will extend it again, e.g. a search step already expanded, a final answer, a finished problem's
path), then one whose tokens another slot also holds (nothing is lost), then the lowest ranked
(how promising the caller finds the path), least recently used. The bookkeeping is pure Python
over a ``KVMemory``, the three cell operations it needs, so it does not import llama.cpp.

Why ranks: under tree search most cached paths are never read again (MCTS expands about one
child in three), and LRU cannot tell them from the frontier; worse, problems take turns, so the
least recently used paths are those of the problem whose turn comes next. Replayed on 128 MCTS
problems (``benchmarks/cache_replay.py``), retiring and ranking cut re-prefilled tokens per
generated token from 0.30 to 0.12 with a unified cache and from 0.25 to 0.14 with KV streams.

With one KV stream per slot (``compact``), llama.cpp splits a batch wherever the running
sequences' ids stop being consecutive, and every piece reads the weights again. So a compact
cache always takes the lowest free slot, first copying what that slot held to a slot higher up
when it is worth more than what the copy overwrites (``_demote``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from x1.models.base import BackendError

RETIRED = -1.0  # no prompt will extend this content again
UNRANKED = 0.5  # what nobody ranked is worth: between a search's least and most promising paths (ranks in [0, 1])


class KVMemory(Protocol):
    """The KV-cache cell operations the bookkeeping needs (llama.cpp's ``llama_memory_*``); -1 means "to the end"."""

    def remove(self, slot: int, start: int = -1, end: int = -1) -> None:
        """Drop ``slot``'s cells in positions [start, end)."""

    def copy(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        """Tag ``src``'s cells in [start, end) as ``dst``'s too (llama.cpp shares cells, it copies nothing)."""

    def clear(self) -> None:
        """Drop every cell of every slot."""


@dataclass
class Slot:
    """One sequence slot of the llama.cpp context."""

    tokens: list[int] = field(default_factory=list)  # what this sequence's KV cells hold, in order
    last_used: int = 0
    busy: bool = False
    key: int = 0  # names this content for ``rank``; it moves with the content when a compact cache demotes it
    rank: float = UNRANKED  # what keeping it is worth to the caller: RETIRED ones go first, the lowest after them


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotCache:
    """The slots of one context, with an LRU clock that counts turns on the context."""

    def __init__(self, memory: KVMemory, n_slots: int, prefix_reuse: bool = True, evict_covered_first: bool = True,
                 compact: bool = False) -> None:
        self.memory = memory
        self.prefix_reuse = prefix_reuse
        self.evict_covered_first = evict_covered_first  # False: plain LRU (the benchmark's "before")
        self.compact = compact  # running sequences in the lowest slots (one KV stream per slot)
        self.slots = [Slot() for _ in range(n_slots)]
        self.clock = 0
        self._keys = 0

    def _fresh(self, **fields: object) -> Slot:
        """A new slot content with its own key."""
        self._keys += 1
        return Slot(key=self._keys, **fields)  # type: ignore[arg-type]

    def tick(self) -> None:
        """Start a new turn: what is used from now on is more recent than anything before."""
        self.clock += 1

    def free_count(self) -> int:
        return sum(not s.busy for s in self.slots)

    def cached(self) -> set[int]:
        """Slots whose cells hold tokens (busy or not)."""
        return {i for i, s in enumerate(self.slots) if s.tokens}

    def take(self, protect: int = -1, keep: set[int] | frozenset[int] = frozenset()) -> int:
        """A free slot, evicting a cached one (``victim``) when none is empty: never ``protect`` (a copy is
        about to read it), and slots in ``keep`` (later prompts of this batch read them) only when
        nothing else is free."""
        free = [i for i, s in enumerate(self.slots) if not s.busy and i != protect]
        if not free:
            raise BackendError(f"all {len(self.slots)} sequence slots are busy; fix: raise n_seq_max or send smaller batches")
        if self.compact:
            slot = free[0]
            self._demote(slot, [i for i in free[1:] if i not in keep])
        else:
            empty = [i for i in free if not self.slots[i].tokens]
            spare = [i for i in free if i not in keep] or free
            slot = empty[0] if empty else self.victim(spare)
        self.memory.remove(slot)
        self.slots[slot] = self._fresh(busy=True, last_used=self.clock)
        return slot

    def pack(self, running: list[int], incoming: int = 0) -> dict[int, int]:
        """Move running sequences down into the free slots below them, so that they and ``incoming``
        new sequences (which take the lowest free slots) hold slots 0..n-1; {old slot: new slot}.
        A compact cache only.

        A sequence that finishes leaves a hole among the running ones until an admission fills it, and
        llama.cpp splits each step's batch at every hole (one more pass over the weights). Replayed on
        128 MCTS problems, a step had 5 such pieces. A move costs one stream copy (and a second when
        what the hole cached is worth keeping: demoted as a taken slot's is); a piece costs every step.
        """
        if not self.compact:
            return {}
        n = len(running) + incoming
        free = [i for i, s in enumerate(self.slots) if not s.busy]
        holes = [i for i in free if i < n][incoming:]  # the lowest ones are the newcomers'
        tops = sorted((i for i in running if i >= n), reverse=True)
        spare = [i for i in free if i >= n]  # demotion targets: never a hole that is about to be filled
        moves: dict[int, int] = {}
        for hole, top in zip(holes, tops, strict=False):
            self._demote(hole, [i for i in spare if i != hole and not self.slots[i].busy])
            self.memory.remove(hole)
            self.memory.copy(top, hole, -1, -1)
            self.slots[hole] = self.slots[top]
            self.memory.remove(top)
            self.slots[top] = Slot()
            spare.append(top)
            moves[top] = hole
        return moves

    def lowest_free(self) -> int:
        """The slot ``take`` would choose in a compact cache (-1 if all are busy)."""
        return next((i for i, s in enumerate(self.slots) if not s.busy), -1)

    def _demote(self, slot: int, candidates: list[int]) -> None:
        """Copy the cached tokens of ``slot`` (about to be taken) to a free slot among ``candidates``: an
        empty one, highest first, else the victim, if they are worth more than the victim's (``_worth``)."""
        held = self.slots[slot]
        if not held.tokens or held.rank == RETIRED or not candidates:
            return
        covered = self.covered()
        if slot in covered:
            return  # another slot holds these tokens too
        empty = [i for i in candidates if not self.slots[i].tokens]
        dst = empty[-1] if empty else self.victim(candidates, covered)
        if self.slots[dst].tokens and self._worth(self.slots[dst]) >= self._worth(held):
            return
        self.memory.remove(dst)
        self.memory.copy(slot, dst, -1, -1)
        self.slots[dst] = Slot(tokens=held.tokens, last_used=held.last_used, key=held.key, rank=held.rank)

    @staticmethod
    def _worth(slot: Slot) -> tuple[float, int]:
        """What keeping a cached slot is worth: its rank, then the more recently used."""
        return slot.rank, slot.last_used

    def victim(self, candidates: list[int], covered: set[int] | None = None) -> int:
        """The cached slot to evict: a retired one, else one whose tokens another slot also holds (nothing
        is lost), else the lowest ranked, least recently used. ``covered``: ``self.covered()`` when the
        caller has it already. Retired before covered: a covered slot is often a prefix of a retired one,
        so it serves once that one goes (replayed on 128 MCTS problems with KV streams: 0.14 re-prefilled
        per generated token, against 0.31 covered first)."""
        if not self.evict_covered_first:
            covered = set()
        elif covered is None:
            covered = self.covered()
        slots = self.slots
        return min(candidates, key=lambda i: (slots[i].rank != RETIRED, i not in covered, slots[i].rank, slots[i].last_used))

    def key(self, slot: int) -> int:
        """The key of what ``slot`` holds now (for ``rank``)."""
        return self.slots[slot].key

    def rank(self, ranks: dict[int, float]) -> None:
        """Set what keeping each content (by key) is worth: ``RETIRED`` when no prompt will extend it (it
        stays cached, since a shorter prefix of it may still serve, but goes first), else in [0, 1].
        Keys whose content is gone are ignored."""
        for slot in self.slots:
            rank = ranks.get(slot.key)
            if rank is not None:
                slot.rank = rank

    def covered(self) -> set[int]:
        """Slots whose whole token list is a prefix of another slot's: any prompt they serve, that slot serves too.

        In sorted order, the lists that start with a given list follow it directly, so one pass over
        neighbours finds them all. Of identical lists, all but the last are covered. A running slot's
        newest token may not be decoded yet, so it covers only strictly shorter lists.
        """
        order = sorted((i for i, s in enumerate(self.slots) if s.tokens), key=lambda i: self.slots[i].tokens)
        out: set[int] = set()
        for a, b in zip(order, order[1:], strict=False):
            short, long = self.slots[a], self.slots[b]
            n = len(short.tokens)
            if (len(long.tokens) > n or (len(long.tokens) == n and not long.busy)) and long.tokens[:n] == short.tokens:
                out.add(a)
        return out

    def reclaim(self, slot: int, keep_cells: int) -> None:
        """Take the free cached ``slot`` itself, keeping its first ``keep_cells`` cells (a prompt that extends it)."""
        self.memory.remove(slot, keep_cells, -1)
        self.slots[slot] = self._fresh(busy=True, last_used=self.clock)

    def fork(self, src: int, tokens: list[int]) -> int:
        """A fresh slot sharing all of ``src``'s cells, which hold ``tokens``."""
        slot = self.take()
        self.memory.copy(src, slot, -1, -1)
        self.slots[slot].tokens = list(tokens)
        return slot

    def best_prefix(self, tokens: list[int], among: set[int] | None = None) -> tuple[int, int]:
        """(slot, length) of the longest cached prefix of ``tokens``; (-1, 0) if none."""
        if not self.prefix_reuse:
            return -1, 0
        best, best_len = -1, 0
        for i, s in enumerate(self.slots):
            if s.tokens and (among is None or i in among):
                n = common_prefix(s.tokens, tokens)
                if n > best_len:
                    best, best_len = i, n
        return best, best_len

    def evict_idle(self) -> bool:
        """Free the least recently used idle cached slot (a full KV cache); False if there is none."""
        idle = [i for i, s in enumerate(self.slots) if not s.busy and s.tokens]
        if not idle:
            return False
        victim = min(idle, key=lambda i: self._worth(self.slots[i]))
        self.memory.remove(victim)
        self.slots[victim] = Slot()
        return True

    def release(self, slot: int) -> None:
        """Done with ``slot``: its cells stay cached for a later prompt to reuse."""
        s = self.slots[slot]
        s.busy = False
        s.last_used = self.clock

    def drop(self, slot: int) -> None:
        """Abandon ``slot``: its cells go (its newest token may not be decoded, so they are not worth keeping)."""
        self.memory.remove(slot)
        self.slots[slot] = Slot()

    def clear(self) -> None:
        """Forget every cached prefix."""
        self.memory.clear()
        self.slots = [Slot() for _ in range(len(self.slots))]

    @contextlib.contextmanager
    def freeing_on_error(self) -> Iterator[None]:
        """Slots a failed call took (a full KV cache mid-prefill) are emptied, so the failure does not keep their cells forever."""
        before = {i for i, s in enumerate(self.slots) if s.busy}
        try:
            yield
        except Exception:
            for i, slot in enumerate(self.slots):
                if slot.busy and i not in before:
                    self.drop(i)
            raise
