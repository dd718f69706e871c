"""A deadline for a request's headers: a slow (slowloris) client gets 408 and its connection closed.

uvicorn bounds idle keep-alive connections but not one that sends its headers a byte at a time,
so a few such clients would each hold a connection forever. This protocol arms a timer when a
connection opens and after each response; if no new request has started by then, it answers 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 29\r\nconnection: close\r\n\r\n" \
                    b"request headers arrived late\n"  # fmt: skip


class SlowClientH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline (``HEADER_TIMEOUT_S``)."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        timer: Any = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        timer: Any = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._armed_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        """No request began since the deadline was armed: if bytes of one arrived (or none did), answer 408 and close."""
        if self.transport.is_closing() or self.cycle is not self._armed_cycle:
            return
        if self.conn.their_state is h11.IDLE:
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()
