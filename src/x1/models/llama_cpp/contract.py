"""The contract between the decode stream and the backend that owns the llama.cpp context.

The stream decides *what* to run each step (which requests join, which sequences finish); the
backend owns *how* (the context, its lock, the KV slots, the sampler). ``StreamBackend`` is every
call the stream may make, so the stream never reaches into the backend's state, and a reader
sees in one place what a step can do to the context.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

import numpy as np

from x1.models.base import BackendStats, GenerationRequest
from x1.models.sampling import StepSample

# One token for ``llama_decode``: (token, position, slot, whether its logits row is wanted).
Entry = tuple[int, int, int, bool]


class Prefill(NamedTuple):
    """What ``StreamBackend.prefill`` did: one slot and one logits row per prompt, plus the rows of the lead entries."""

    slots: list[int]
    last_logits: np.ndarray  # each prompt's last position: its first token is sampled from it
    prefilled: list[int]  # prompt tokens actually evaluated per prompt (the rest came from the cache)
    lead_logits: np.ndarray


class StreamBackend(Protocol):
    """What a decode stream may ask of the llama.cpp backend.

    Everything but ``tokenize``, ``piece`` and ``is_eog`` runs inside ``turn()``. Logits returned
    by ``decode``/``prefill`` are a view that the next decode overwrites: consume them first.
    """

    name: str
    n_seq_max: int
    n_ctx: int
    n_ctx_seq: int  # cells one sequence may fill (n_ctx in a unified cache)
    stats: BackendStats

    def tokenize(self, text: str) -> list[int]:
        """The prompt's tokens (with BOS where the model wants one)."""

    def piece(self, token: int) -> bytes:
        """The bytes one token stands for."""

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, end of turn)."""

    def turn(self) -> AbstractContextManager[None]:
        """Exclusive use of the context for one step, cancel or close; the LRU clock counts turns."""

    def freeing_on_error(self) -> AbstractContextManager[None]:
        """Slots taken inside the block are emptied if it raises (a full KV cache mid-prefill)."""

    def free_slots(self) -> int:
        """Slots no sequence is generating in now (cached ones included: they can be evicted)."""

    def prefill(self, prompts: list[list[int]], lead: list[Entry]) -> Prefill:
        """Put each prompt in a slot, reusing the best cached prefix, in the same decode as ``lead``."""

    def decode(self, entries: list[Entry]) -> np.ndarray:
        """Decode ``entries``; the logits rows of those that want one, in order."""

    def fork(self, src: int, tokens: list[int]) -> int:
        """A fresh slot sharing ``src``'s cells (which hold ``tokens``): a request's next child."""

    def append(self, slot: int, token: int) -> int:
        """Record ``token`` as ``slot``'s next cell (decoded next step); its position."""

    def cache_key(self, slot: int) -> int:
        """The name of what ``slot`` holds now (a finished sequence's ``Completion.cache_ref``)."""

    def pack(self, running: list[int], incoming: int) -> dict[int, int]:
        """Move running sequences (by slot) into the free slots below them that ``incoming`` new ones
        leave; {old slot: new slot}."""

    def release(self, slot: int) -> None:
        """A sequence finished: its slot is free, its cells stay cached for reuse."""

    def drop(self, slot: int) -> None:
        """A sequence was abandoned: its slot is free and its cells are gone."""

    def sample(self, logits: np.ndarray, requests: list[GenerationRequest], rngs: list[np.random.Generator]) -> StepSample:
        """One token per logits row (the rows are consumed: overwritten in place), with its signals."""
