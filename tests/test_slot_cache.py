"""The prefix cache's bookkeeping (pure Python over a recorded KV memory): which slot is evicted."""

from __future__ import annotations

from x1.models.llama_cpp.slots import RETIRED, SlotCache


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


def test_a_compact_cache_takes_the_lowest_free_slot_and_moves_what_it_held_up() -> None:
    """One KV stream per slot: running sequences stay in the lowest slots; the tokens the taken slot
    held are copied to the highest empty slot, or over an older victim, never over newer tokens."""
    memory = RecordedMemory()
    cache = SlotCache(memory, 5, compact=True)
    cache.slots[0].busy = True
    cache.slots[1].tokens, cache.slots[1].last_used = [1, 2, 3], 7
    cache.slots[2].tokens, cache.slots[2].last_used = [4], 1
    assert cache.take() == 1
    assert ("copy", 1, 4, -1, -1) in memory.calls  # moved to the highest empty slot
    assert cache.slots[4].tokens == [1, 2, 3] and cache.slots[4].last_used == 7
    assert cache.best_prefix([1, 2, 3, 9]) == (4, 3)
    # no empty slot left: slot 2 goes next, and its [4] (used at 1) is older than what slots 3 and 4 hold
    cache.slots[3].tokens, cache.slots[3].last_used = [5, 5], 9
    memory.calls.clear()
    assert cache.take() == 2
    assert not any(c[0] == "copy" for c in memory.calls)  # [4] is older than every possible destination: it is dropped
    assert cache.slots[3].tokens == [5, 5] and cache.slots[4].tokens == [1, 2, 3]


def test_a_compact_cache_does_not_move_a_covered_slot() -> None:
    memory = RecordedMemory()
    cache = SlotCache(memory, 4, compact=True)
    cache.slots[0].tokens, cache.slots[1].tokens = [1, 2], [1, 2, 3]
    assert cache.take() == 0
    assert not any(c[0] == "copy" for c in memory.calls)  # slot 1 still holds [1, 2]


def test_a_retired_slot_goes_before_a_covered_one_and_ranks_order_the_rest() -> None:
    """The caller's ranks (``rank``): a retired content is evicted first, even before one another slot
    covers; among live ones the lowest rank goes, and only equal ranks fall back to LRU."""
    cache = cache_with([[1, 2], [1, 2, 3], [7], [8]])  # slot 0 is covered by slot 1
    keys = [cache._fresh().key for _ in range(4)]
    for slot, key in zip(cache.slots, keys, strict=True):
        slot.key = key
    cache.rank({keys[3]: RETIRED, 999: RETIRED})  # a key whose content is gone is ignored
    assert cache.take() == 3
    assert cache.take() == 0  # then the covered one
    cache.rank({keys[1]: 0.2, keys[2]: 0.9})
    assert cache.take() == 1  # the less promising path, though slot 2 is the least recently used


def test_a_compact_cache_moves_a_content_with_its_key_and_rank_and_drops_a_retired_one() -> None:
    memory = RecordedMemory()
    cache = SlotCache(memory, 4, compact=True)
    cache.slots[0] = cache._fresh(tokens=[1, 2, 3], last_used=1)
    moved = cache.slots[0].key
    cache.rank({moved: 0.8})
    assert cache.take() == 0
    assert cache.slots[3].tokens == [1, 2, 3] and cache.slots[3].key == moved and cache.slots[3].rank == 0.8
    cache.release(0)
    cache.slots[0].tokens = [5, 6]
    cache.rank({cache.key(0): RETIRED})
    memory.calls.clear()
    assert cache.take() == 0
    assert not any(c[0] == "copy" for c in memory.calls)  # nobody will read [5, 6] again: not worth a copy


def test_a_compact_cache_packs_running_sequences_into_the_holes_below_them() -> None:
    """A finished sequence leaves a hole among the running ones (llama.cpp would split the batch there):
    the highest running one moves down into it, what the hole cached moves up, and holes the step's
    incoming prompts will take are left for them."""
    memory = RecordedMemory()
    cache = SlotCache(memory, 8, compact=True)
    for i in (0, 1, 3, 5):
        cache.slots[i] = cache._fresh(tokens=[10 + i, i], busy=True)
    cache.slots[2] = cache._fresh(tokens=[9, 9, 9], last_used=4)  # the finished one's path, worth keeping
    running_key = cache.slots[5].key
    assert cache.pack([0, 1, 3, 5]) == {5: 2}
    assert cache.slots[2].tokens == [15, 5] and cache.slots[2].busy and cache.slots[2].key == running_key
    assert cache.slots[5].tokens == [] and not cache.slots[5].busy
    assert cache.best_prefix([9, 9, 9, 1]) == (7, 3)  # demoted to the highest empty slot
    assert memory.calls.index(("copy", 2, 7, -1, -1)) < memory.calls.index(("copy", 5, 2, -1, -1))
    assert cache.pack([0, 1, 2, 3]) == {}  # already consecutive
    # one prompt comes in this step: it takes the lowest free slot (4), so nothing needs to move
    cache.release(3)
    assert cache.pack([0, 1, 2], incoming=1) == {}
    assert cache.pack([0, 1, 2], incoming=0) == {}
    assert SlotCache(RecordedMemory(), 4).pack([0, 3]) == {}  # a unified cache never splits a batch
