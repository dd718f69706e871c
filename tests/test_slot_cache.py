"""The prefix cache's bookkeeping (pure Python over a recorded KV memory): which slot is evicted."""

from __future__ import annotations

from x1.models.llama_cpp.slots import SlotCache


class RecordedMemory:
    """Records the cell operations instead of touching llama.cpp."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def remove(self, slot: int, start: int = -1, end: int = -1) -> None:
        self.calls.append(("remove", slot, start, end))

    def copy(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        self.calls.append(("copy", src, dst, start, end))

    def clear(self) -> None:
        self.calls.append(("clear",))


def cache_with(lists: list[list[int]], evict_covered_first: bool = True) -> SlotCache:
    cache = SlotCache(RecordedMemory(), len(lists), evict_covered_first=evict_covered_first)
    for i, tokens in enumerate(lists):
        cache.slots[i].tokens = list(tokens)
        cache.slots[i].last_used = i  # slot 0 is the least recently used
    return cache


def test_covered_slots_are_prefixes_of_another_slot() -> None:
    cache = cache_with([[1, 2, 3], [1, 2, 3, 4], [1, 2, 9], [5], [5], [7, 7]])
    # [1,2,3] is inside [1,2,3,4]; of the two [5], the first is covered by the second; [1,2,9] and [7,7] are alone
    assert cache.covered() == {0, 3}


def test_a_running_slot_covers_only_shorter_lists() -> None:
    cache = cache_with([[1, 2], [1, 2], [3, 4], [3, 4, 5]])
    cache.slots[1].busy = True  # its last token may not be decoded yet
    cache.slots[3].busy = True
    assert cache.covered() == {2}


def test_eviction_takes_a_covered_slot_before_the_least_recently_used() -> None:
    lists = [[1, 2, 9], [4, 4], [4, 4, 5], [6]]
    cache = cache_with(lists)
    assert cache.take() == 1  # [4,4] lives on inside slot 2, though slot 0 is older
    assert cache.best_prefix([4, 4, 5, 7]) == (2, 3)
    lru = cache_with(lists, evict_covered_first=False)
    assert lru.take() == 0  # plain LRU: the older, uncovered [1,2,9] goes and its cells are lost


def test_with_nothing_covered_eviction_is_least_recently_used() -> None:
    cache = cache_with([[1], [2], [3]])
    cache.slots[0].last_used = 5
    assert cache.take() == 1
