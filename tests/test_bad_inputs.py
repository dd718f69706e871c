"""Issue 20's bad-input table: every row exits non-zero with one line that names what is wrong, before any work starts.

The fake backend keeps these fast; each case checks the exit code and the error line, and
that no traceback got out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from x1.cli import app

runner = CliRunner()


def write_tasks(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(n)))
    return path


def error_line(result) -> str:  # type: ignore[no-untyped-def]
    """The one line the command printed; the test fails if there is more (a traceback, a wrapped message)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def eval_args(tmp_path: Path, *extra: str, task: str | None = None) -> list[str]:
    task = task or f"jsonl:{write_tasks(tmp_path / 'tasks.jsonl')}"
    return ["eval", "--task", task, "--model", "fake", "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["-s", "mcts", "-p", "iterations=abc"], "iterations='abc' is not a valid int"),
        (["-s", "mcts", "-p", "iterations=-3"], "iterations=-3 is out of range"),
        (["-s", "mcts", "-p", "evaluator=nosuch"], "unknown evaluator 'nosuch'"),
        (["-s", "best_of_n", "-p", "voting=foo"], "voting='foo' is not one of"),
        (["-s", "mcts", "-p", "answer_by=foo"], "answer_by='foo' is not one of"),
        (["--max-tokens", "0"], "--max-tokens 0"),
        (["--max-tokens", "-5"], "--max-tokens -5"),
        (["--n", "-1"], "n must be 0 or more"),
        (["--n", "0"], "holds no problems"),
    ],
)
def test_bad_flags_fail_in_one_line_before_any_work(tmp_path: Path, extra: list[str], expected: str) -> None:
    result = runner.invoke(app, eval_args(tmp_path, *extra))
    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith("error:") and expected in line
    assert not (tmp_path / "run" / "traces.jsonl").exists()


def test_bad_task_files_name_the_file_and_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(app, eval_args(tmp_path, task=f"jsonl:{empty}"))
    assert result.exit_code == 2 and "holds no problems" in error_line(result)

    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "1+1?", "answer": "2"}\n{"question": "caf\xe9?", "answer": "4"}\n')
    result = runner.invoke(app, eval_args(tmp_path, task=f"jsonl:{latin}"))
    assert result.exit_code == 2
    assert "latin.jsonl line 2: not UTF-8" in error_line(result)


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("not a folder")
    result = runner.invoke(app, eval_args(tmp_path))
    assert result.exit_code == 2 and "is a file, not a directory" in error_line(result)


def test_resume_names_a_record_missing_a_field_and_keeps_the_rest(tmp_path: Path) -> None:
    assert runner.invoke(app, eval_args(tmp_path)).exit_code == 0
    trace = tmp_path / "run" / "traces.jsonl"
    lines = trace.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["correct"]
    trace.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    result = runner.invoke(app, eval_args(tmp_path, "--resume"))
    assert result.exit_code == 2
    assert f"{trace}:2: the record has no field 'correct'" in error_line(result)
    assert trace.read_text().splitlines()[0] == lines[0]  # nothing finished was thrown away

    trace.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:50])  # a kill mid-write: the torn line is dropped
    result = runner.invoke(app, eval_args(tmp_path, "--resume"))
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["task_id"] for line in trace.read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--model", "fake:other"], "model='fake'"),
        (["-p", "n=2"], "params.n=unset"),
        (["--seed", "7"], "seed=0"),
        (["--max-tokens", "900"], "budget.max_tokens=unset"),
        (["--strategy", "cot"], "strategy='best_of_n'"),
    ],
)
def test_resume_refuses_a_changed_run_identity(tmp_path: Path, change: list[str], named: str) -> None:
    base = eval_args(tmp_path, "-s", "best_of_n")
    assert runner.invoke(app, base).exit_code == 0
    trace = tmp_path / "run" / "traces.jsonl"
    trace.write_text(trace.read_text().splitlines()[0] + "\n")  # as if interrupted after one problem
    result = runner.invoke(app, [*base, *change, "--resume"])
    assert result.exit_code == 2
    line = error_line(result)
    assert named in line and "another --out" in line
    assert len(trace.read_text().splitlines()) == 1  # nothing ran under the new label
    assert runner.invoke(app, [*base, "--resume"]).exit_code == 0  # the same flags still resume


def test_pickled_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    from helpers import save_tiny_llama

    folder = tmp_path / "evil"
    save_tiny_llama(folder)
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    import pickle

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    result = runner.invoke(app, ["solve", "1+1?", "--model", str(folder), "-s", "cot", "--trace", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 2
    assert "pickled weights" in result.output.splitlines()[-1]
    assert not (tmp_path / "pwned").exists()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    """The console script calls ``x1.cli:app`` itself, so the message must come from the app object, not ``main()``."""
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from x1.cli import app

        @app.command("wait")
        def wait() -> None:
            print("ready", flush=True)
            time.sleep(30)

        app()
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # A shell's background job (CI may be one) starts with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored; a user's terminal gives the default, which is what this test is about.
    proc = subprocess.Popen([sys.executable, str(script), "wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C)"), err
