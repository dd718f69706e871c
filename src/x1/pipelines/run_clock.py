"""A run's time across the sessions that make it: wall seconds, and the CPU seconds its own process used.

A long run is interrupted and resumed, paused (SIGSTOP) while another job has the machine, or
runs beside other jobs at a lower priority. Wall time then counts the other jobs too, so a cell
of a study that happened to run beside a test suite looks slower than one that ran alone. CPU
seconds (all threads of this process, llama.cpp's included; ``time.process_time``) count this
run's own threads only: a pause adds nothing to them, and other jobs add only the time this run's
threads spin while they wait for each other (llama.cpp's and OpenMP's do). Both are kept in
``elapsed.json`` and updated as
the run goes, so a kill loses at most one tick. A run whose earlier sessions predate the CPU
count (or ran in other processes, as a distributed run's workers do) has ``cpu_s`` None: a part
sum would understate it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

ELAPSED_FILE = "elapsed.json"


@dataclass(frozen=True)
class Elapsed:
    wall_s: float
    cpu_s: float | None  # None: some session of the run was not measured in this process


def read_elapsed(out_dir: Path) -> Elapsed | None:
    """What earlier sessions of the run in ``out_dir`` spent; None for a new run."""
    path = out_dir / ELAPSED_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    cpu = data.get("cpu_s")
    return Elapsed(float(data["wall_s"]), None if cpu is None else float(cpu))


def write_elapsed(out_dir: Path, elapsed: Elapsed) -> None:
    tmp = out_dir / f"{ELAPSED_FILE}.tmp"
    tmp.write_text(json.dumps({"wall_s": elapsed.wall_s, "cpu_s": elapsed.cpu_s}))
    os.replace(tmp, out_dir / ELAPSED_FILE)


class RunClock:
    """Started when a session of a run starts; ``record`` adds this session to the earlier ones and saves the sum."""

    def __init__(self, out_dir: Path, resume: bool, count_cpu: bool = True) -> None:
        self.out_dir = out_dir
        earlier = read_elapsed(out_dir) if resume else None
        self.earlier = earlier or Elapsed(0.0, 0.0)
        self.count_cpu = count_cpu
        self.wall_start = time.perf_counter()
        self.cpu_start = time.process_time()

    def now(self) -> Elapsed:
        wall = self.earlier.wall_s + time.perf_counter() - self.wall_start
        if not self.count_cpu or self.earlier.cpu_s is None:
            return Elapsed(wall, None)
        return Elapsed(wall, self.earlier.cpu_s + time.process_time() - self.cpu_start)

    def record(self) -> Elapsed:
        elapsed = self.now()
        write_elapsed(self.out_dir, elapsed)
        return elapsed
