"""Counters, gauges and histograms written out by hand in the Prometheus text format (0.0.4).

No client library: a server needs a handful of series and the format is a few lines of text.
Every update takes one lock, so the event loop and worker threads may both record.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Sequences per backend call: powers of two up to the largest batch a server is likely to use.
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Seconds from arrival to answer: a few milliseconds (value scores) up to minutes (long generations).
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{_escape(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str] | None) -> tuple[str, ...]:
        labels = labels or {}
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def values(self) -> dict[tuple[str, ...], float]:
        with self._lock:
            return dict(self._values)

    def render(self) -> list[str]:
        lines = self.header()
        for key, v in sorted(self.values().items()):
            lines.append(f"{self.name}{_labels(self.label_names, key)} {_number(v)}")
        return lines


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def value(self) -> float:
        with self._lock:
            return self._value

    def render(self) -> list[str]:
        return [*self.header(), f"{self.name} {_number(self.value())}"]


class Histogram(_Metric):
    """Cumulative buckets, ``_sum`` and ``_count``, as Prometheus expects."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            i = next((k for k, b in enumerate(self.buckets) if value <= b), len(self.buckets))
            self._counts[i] += 1
            self._sum += value
            self._count += 1

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    @property
    def sum(self) -> float:
        with self._lock:
            return self._sum

    def mean(self) -> float:
        with self._lock:
            return self._sum / self._count if self._count else 0.0

    def render(self) -> list[str]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        lines = self.header()
        running = 0
        for bound, c in zip((*self.buckets, math.inf), counts, strict=True):
            running += c
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {_number(total)}")
        lines.append(f"{self.name}_count {n}")
        return lines


class ServerMetrics:
    """The series every x1 server exports; ``prefix`` keeps two servers' names apart if wanted."""

    def __init__(self, prefix: str = "x1") -> None:
        p = prefix
        self.queue_depth = Gauge(f"{p}_queue_depth", "Requests waiting for a batch (not yet sent to the model).")
        self.in_flight = Gauge(f"{p}_batch_in_flight", "Sequences in the batch the model is working on now.")
        self.batch_size = Histogram(f"{p}_batch_size", "Sequences per model call (a decode step when streaming).", BATCH_BUCKETS)
        self.queue_wait = Histogram(f"{p}_queue_wait_seconds", "Seconds a request waited before its batch started.", LATENCY_BUCKETS)
        self.latency = Histogram(f"{p}_request_latency_seconds", "Seconds from arrival to answer, per API (/v1) request.", LATENCY_BUCKETS)
        self.requests = Counter(f"{p}_requests_total", "API (/v1) requests answered, by HTTP status code.", ["status"])
        self.items = Counter(f"{p}_batch_items_total", "Requests that went through the batcher, by outcome.", ["outcome"])
        self.retries = Counter(f"{p}_batch_retries_total", "Failed batches retried one request at a time.")
        self.tokens = Counter(f"{p}_tokens_total", "Tokens processed, by kind (prompt, completion).", ["kind"])

    def all(self) -> list[_Metric]:
        return [self.queue_depth, self.in_flight, self.batch_size, self.queue_wait, self.latency, self.requests, self.items,
                self.retries, self.tokens]

    def render(self) -> str:
        return "\n".join(line for m in self.all() for line in m.render()) + "\n"
