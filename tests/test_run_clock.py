"""A run's wall and CPU seconds across sessions (elapsed.json)."""

import json
import time

from x1.pipelines.run_clock import Elapsed, RunClock, read_elapsed, write_elapsed


def test_a_pause_counts_in_wall_time_but_not_in_cpu_time(tmp_path):
    clock = RunClock(tmp_path, resume=False)
    time.sleep(0.3)  # stands in for a SIGSTOP or another job holding the CPU
    spent = clock.record()
    assert spent.wall_s >= 0.3
    assert spent.cpu_s is not None and spent.cpu_s < 0.15


def test_work_counts_in_cpu_time(tmp_path):
    clock = RunClock(tmp_path, resume=False)
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert clock.record().cpu_s >= 0.2


def test_a_resumed_run_adds_its_earlier_sessions(tmp_path):
    write_elapsed(tmp_path, Elapsed(100.0, 40.0))
    spent = RunClock(tmp_path, resume=True).record()
    assert 100.0 <= spent.wall_s < 110.0 and 40.0 <= spent.cpu_s < 50.0
    assert read_elapsed(tmp_path) == spent


def test_a_session_from_before_the_cpu_count_leaves_cpu_unknown(tmp_path):
    (tmp_path / "elapsed.json").write_text(json.dumps({"wall_s": 100.0}))  # as older x1 wrote it
    spent = RunClock(tmp_path, resume=True).record()
    assert spent.wall_s >= 100.0 and spent.cpu_s is None
    assert RunClock(tmp_path, resume=True).record().cpu_s is None  # and it stays unknown: a part sum would understate it


def test_work_in_other_processes_is_not_counted_as_this_ones(tmp_path):
    assert RunClock(tmp_path, resume=False, count_cpu=False).record().cpu_s is None


def test_a_fresh_run_ignores_an_old_elapsed_file(tmp_path):
    write_elapsed(tmp_path, Elapsed(100.0, 40.0))
    assert RunClock(tmp_path, resume=False).record().wall_s < 10.0
