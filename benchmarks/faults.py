"""Crash-safety and bad-input figures for every command, as one table (issue 20). Loopback only, bounded.

    python benchmarks/faults.py            # 20 kill points per command, the full abuse run (25 min on 2 shared cores)
    python benchmarks/faults.py --quick    # 3 kill points per command, a short abuse run

1. kill -9 at random moments of ``x1 eval`` (fake backend), ``x1 train`` (a tiny random Llama recipe) and
   ``x1 fit sft`` (the same tiny model, 12 steps, a checkpoint every 2), each followed by the command's
   own way to continue (eval ``--resume``; train and fit re-run the same command, which resumes). Counted:
   finished problems or completed (for fit: checkpointed) steps lost, duplicate records or logged steps,
   and whether the final results (fit: model.safetensors' sha256) equal an uninterrupted run with the same seed.
2. Bad inputs: each command line's exit code and first line.
3. ``x1 serve policy --model smollm2`` under abuse while good requests keep coming: good requests
   lost, CPU idle within 5 s of the load stopping, RSS before/after, SIGTERM exit time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
X1 = [sys.executable, "-c", "from x1.cli import app; app()"]


def x1(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*X1, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def complete_lines(path: Path) -> list[str]:
    """The records a kill cannot take back: lines ending in a newline."""
    if not path.exists():
        return []
    data = path.read_text(encoding="utf-8", errors="replace")
    return data.splitlines()[: data.count("\n")]


# -- 1. kill points ------------------------------------------------------------------------------
def kill_chain(cmd: list[str], resume: list[str], cwd: Path, delays: list[float], snapshot: Any) -> tuple[int, list[Any]]:
    """Start ``cmd``, kill -9 after each delay and continue with ``resume``; run to the end. Snapshots taken at each kill."""
    kills, snaps, args = 0, [], cmd
    for delay in delays:
        proc = subprocess.Popen([*X1, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
            snaps.append(snapshot())
        args = resume
    done = x1(resume, cwd, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(resume)} failed after the kills: {done.stderr[-400:]}")
    return kills, snaps


def eval_kills(work: Path, target: int, rng: random.Random) -> dict[str, Any]:
    tasks = work / "arith.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "question": f"What is {a}+{b}?", "answer": str(a + b)}) + "\n"
                             for i, (a, b) in enumerate((rng.randint(1, 99), rng.randint(1, 99)) for _ in range(60))))
    base = ["eval", "--task", f"jsonl:{tasks}", "--model", "fake", "-s", "mcts", "-p", "iterations=60", "--max-active", "2"]
    start = time.perf_counter()
    if x1([*base, "--out", str(work / "ref")], work).returncode != 0:
        raise RuntimeError("the uninterrupted eval failed")
    span = time.perf_counter() - start
    ref = {json.loads(line)["task_id"]: json.loads(line) for line in complete_lines(work / "ref" / "traces.jsonl")}
    kills, lost, dups, equal, chain = 0, 0, 0, True, 0
    while kills < target:
        out = work / f"run{chain}"
        chain += 1
        trace = out / "traces.jsonl"
        cmd = [*base, "--out", str(out)]
        delays = [rng.uniform(0.8, span) for _ in range(4)]
        got, snaps = kill_chain(cmd, [*cmd, "--resume"], work, delays, lambda t=trace: complete_lines(t))
        kills += got
        final = complete_lines(trace)
        ids = [json.loads(line)["task_id"] for line in final]
        dups += len(ids) - len(set(ids))
        lost += sum(len(set(snap) - set(final)) for snap in snaps)
        mine = {json.loads(line)["task_id"]: json.loads(line) for line in final}
        keys = ("answer", "correct", "score")
        equal &= mine.keys() == ref.keys() and all(all(mine[k][f] == ref[k][f] for f in keys) for k in ref)
        ref_acc = json.loads((work / "ref" / "results.json").read_text())["accuracy"]
        equal &= json.loads((out / "results.json").read_text())["accuracy"] == ref_acc
    return {"command": "x1 eval (fake, 60 problems, mcts)", "kills": kills, "lost": lost, "duplicates": dups, "equal": equal,
            "unit": "finished problems"}


def tiny_model(work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import save_tiny_llama

    folder = work / "tiny"
    if not folder.exists():
        save_tiny_llama(folder)
    return folder


def train_kills(work: Path, target: int, rng: random.Random) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_recipe import write_config

    tiny = tiny_model(work)

    def config(out: Path) -> Path:
        return write_config(work / f"{out.name}.yaml", str(tiny), out)

    start = time.perf_counter()
    if x1(["train", str(config(work / "tref"))], work).returncode != 0:
        raise RuntimeError("the uninterrupted train failed")
    span = time.perf_counter() - start

    def timeless(value: Any) -> Any:
        """Metrics without wall times, which differ between any two runs."""
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k != "wall_s"}
        return [timeless(v) for v in value] if isinstance(value, list) else value

    def metrics(out: Path) -> Any:
        return timeless(json.loads((out / "metrics.json").read_text())["phases"])

    def steps(out: Path) -> dict[str, Any]:
        path = out / "state.json"
        return json.loads(path.read_text())["steps"] if path.exists() else {}

    kills, lost, equal, chain = 0, 0, True, 0
    while kills < target:
        out = work / f"train{chain}"
        chain += 1
        cmd = ["train", str(config(out))]
        got, snaps = kill_chain(cmd, cmd, work, [rng.uniform(2.0, 0.8 * span) for _ in range(6)], lambda o=out: steps(o))
        kills += got
        final = steps(out)
        lost += sum(1 for snap in snaps for name, record in snap.items() if final.get(name) != record)  # a finished step redone
        equal &= metrics(out) == metrics(work / "tref")
    return {"command": "x1 train (tiny Llama recipe)", "kills": kills, "lost": lost, "duplicates": 0, "equal": equal,
            "unit": "completed steps"}


def fit_kills(work: Path, target: int, rng: random.Random) -> dict[str, Any]:
    """kill -9 a 12-step `x1 fit sft` (checkpoints every 2 steps) at random moments of its training and final save.

    At each kill the newest complete checkpoint is noted (``trainer_state.json`` readable: TRL writes it last);
    the re-run's "resuming from checkpoint-R" line says where it picked up, and ``C - R`` completed,
    checkpointed steps would be lost (target 0). Steps after the last checkpoint are redone by design.
    """
    tiny = tiny_model(work)
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt_messages": [{"role": "user", "content": f"What is {i}+{i}?"}],
                                        "completion": f"{i}+{i} = {2 * i}.", "task_id": f"t{i}", "source": "answer_path"}) + "\n"
                            for i in range(8)))

    def cmd(out: Path) -> list[str]:
        return ["fit", "sft", "--data", str(data), "--model", str(tiny), "--out", str(out), "--max-steps", "12", "--batch-size", "2",
                "--seed", "0", "--save-steps", "2", "--device", "cpu"]

    def weights(out: Path) -> str:
        path = out / "model.safetensors"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""

    def newest_checkpoint(out: Path) -> int:
        steps = [0]
        for folder in out.glob("checkpoint-*"):
            try:
                json.loads((folder / "trainer_state.json").read_text())
                steps.append(int(folder.name.split("-")[1]))
            except (OSError, ValueError):
                pass
        return max(steps)

    def launch(out: Path, log: Path, at: tuple[int, float] | None) -> int:
        """Run the fit; with ``at`` = (k, s), kill -9 it s seconds after TRL's bar shows step k of 12, so the kills
        land across the steps, the checkpoint saves and the final save whatever the machine's speed."""
        with log.open("w") as err:
            proc = subprocess.Popen([*X1, *cmd(out)], cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
            seen = None
            while proc.poll() is None:
                if at is not None and seen is None and f"{at[0]}/12 [" in log.read_text(errors="replace"):
                    seen = time.perf_counter()
                if seen is not None and at is not None and time.perf_counter() - seen >= at[1]:
                    proc.kill()
                    break
                time.sleep(0.01)
            proc.wait()
        return proc.returncode

    ref = work / "fref"
    if launch(ref, work / "fref.err", None) != 0 or not weights(ref):
        raise RuntimeError("the uninterrupted fit failed")
    kills, lost, dups, equal, chain = 0, 0, 0, True, 0
    at_checkpoint: list[int] = []  # the newest complete checkpoint at each kill
    completed, redone = 0, 0  # steps finished at the kills; those of them after the newest checkpoint (done again)
    while kills < target:
        out = work / f"fit{chain}"
        chain += 1
        pending: int | None = None  # newest complete checkpoint at the last kill
        for attempt in range(8):
            log = work / f"{out.name}-{attempt}.err"
            code = launch(out, log, (rng.randint(0, 12), rng.uniform(0, 0.5)) if kills < target and attempt < 7 else None)
            text = log.read_text(errors="replace")
            if pending is not None:  # where did this run pick up, against what the kill left
                resumed = [int(line.rsplit("step ", 1)[1].rstrip(")")) for line in text.splitlines() if line.startswith("resuming from")]
                lost += max(0, pending - (resumed[0] if resumed else 0))
            if code == -signal.SIGKILL:
                kills += 1
                pending = newest_checkpoint(out)
                at_checkpoint.append(pending)
                done = max((int(k) for k in re.findall(r"(\d+)/12 \[", text)), default=0)  # steps the bar showed finished
                completed += done
                redone += done - pending
                continue
            if code != 0:
                raise RuntimeError(f"x1 fit sft failed after the kills: {text[-400:]}")
            break
        state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
        logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
        dups += len(logged) - len(set(logged))
        equal &= weights(out) == weights(ref) and logged == list(range(1, 13))
    return {"command": "x1 fit sft (tiny Llama, 12 steps, checkpoint every 2)", "kills": kills, "lost": lost, "duplicates": dups,
            "equal": equal, "unit": "checkpointed steps",
            "detail": f" · steps redone: {redone} of the {completed} finished at the kills (a restart from step 0 redoes all)"
                      " · newest checkpoint at the kills: "
                      + ", ".join(f"{k}: {at_checkpoint.count(k)}x" for k in sorted(set(at_checkpoint)))}


# -- 2. bad inputs -------------------------------------------------------------------------------
def bad_inputs(work: Path) -> list[tuple[str, int, str]]:
    good = work / "good.jsonl"
    good.write_text('{"question": "1+1?", "answer": "2"}\n')
    (work / "empty.jsonl").write_text("")
    (work / "latin.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "2"}\n')
    (work / "afile").write_text("x")
    eval_ = ["eval", "--task", f"jsonl:{good}", "--model", "fake"]
    cases: list[tuple[str, list[str]]] = [
        ("-p iterations=abc", [*eval_, "-s", "mcts", "-p", "iterations=abc", "--out", "b1"]),
        ("-p iterations=-3", [*eval_, "-s", "mcts", "-p", "iterations=-3", "--out", "b2"]),
        ("-p evaluator=nosuch", [*eval_, "-s", "mcts", "-p", "evaluator=nosuch", "--out", "b3"]),
        ("-p voting=foo", [*eval_, "-s", "best_of_n", "-p", "voting=foo", "--out", "b4"]),
        ("-p answer_by=foo", [*eval_, "-s", "mcts", "-p", "answer_by=foo", "--out", "b5"]),
        ("empty JSONL", ["eval", "--task", "jsonl:empty.jsonl", "--model", "fake", "--out", "b6"]),
        ("non-UTF-8 JSONL", ["eval", "--task", "jsonl:latin.jsonl", "--model", "fake", "--out", "b7"]),
        ("--max-tokens 0", [*eval_, "--max-tokens", "0", "--out", "b8"]),
        ("--max-tokens -5", [*eval_, "--max-tokens", "-5", "--out", "b9"]),
        ("--n -1", [*eval_, "--n", "-1", "--out", "b10"]),
        ("--out an existing file", [*eval_, "--out", "afile"]),
        ("unknown task source", ["eval", "--task", "nosuch:thing", "--model", "fake", "--out", "b11"]),
        ("missing model", [*eval_, "--model", "/nonexistent.gguf", "--out", "b12"]),
    ]
    rows = [(name, *first_line(x1(args, work, timeout=120))) for name, args in cases]
    run = ["eval", "--task", f"jsonl:{good}", "--model", "fake", "-s", "best_of_n", "--out", "resumed"]
    x1(run, work)
    rows.append(("--resume with another --model", *first_line(x1([*run, "--model", "fake:other", "--resume"], work))))
    rows.append(("--resume with another -p", *first_line(x1([*run, "-p", "n=2", "--resume"], work))))
    trace = work / "resumed" / "traces.jsonl"
    record = json.loads(trace.read_text().splitlines()[0])
    del record["correct"]
    trace.write_text(json.dumps(record) + "\n")
    rows.append(("--resume, a record missing a field", *first_line(x1([*run, "--resume"], work))))
    if (work / "fref" / "x1_fit.json").exists():  # the fit part ran: its finished --out, run again with a change
        fit = ["fit", "sft", "--data", "sft.jsonl", "--model", str(work / "tiny"), "--out", "fref", "--max-steps", "12",
               "--batch-size", "2", "--seed", "0", "--device", "cpu"]
        rows.append(("x1 fit, same --out, another --lr", *first_line(x1([*fit, "--lr", "1e-3"], work))))
        good.write_text(json.dumps({"prompt": "1+1?", "completion": "2"}) + "\n")
        rows.append(("x1 fit, same --out, another --data", *first_line(x1([*fit, "--data", str(good)], work))))
    rows.append(("x1 fit --save-steps 2.5", *first_line(x1(["fit", "sft", "--data", str(good), "--save-steps", "2.5"], work))))
    return rows


def first_line(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return result.returncode, (lines[0] if lines else "")[:110]


# -- 3. server abuse -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def abuse(url: str, port: int, quick: bool) -> dict[str, Any]:
    import httpx

    auth = {"Authorization": "Bearer k"}
    good = {"ok": 0, "failed": 0}
    sent = [0]
    stop = asyncio.Event()

    async def good_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            sent[0] += 1
            try:
                r = await client.post(f"{url}/v1/completions", headers=auth, json={"prompt": "2+2=", "max_tokens": 2}, timeout=120)
                good["ok" if r.status_code == 200 else "failed"] += 1
            except httpx.HTTPError:
                good["failed"] += 1

    async def slowloris() -> None:
        writers = []
        for _ in range(5):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            writers.append(writer)
        await asyncio.sleep(12)
        for writer in writers:
            writer.close()

    async def attempt(client: httpx.AsyncClient, method: str, path: str, timeout: float = 60, **kw: Any) -> int:
        sent[0] += 1
        try:
            return (await client.request(method, f"{url}{path}", timeout=timeout, **kw)).status_code
        except httpx.TimeoutException:
            return 0  # the client gave up on purpose

    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(limits=limits) as client:
        loops = [asyncio.ensure_future(good_loop(client)) for _ in range(2)]
        statuses: list[int] = []
        slow = asyncio.ensure_future(slowloris())
        many = 50 if quick else 200
        statuses += await asyncio.gather(*(attempt(client, "POST", "/v1/completions", headers=auth,
                                                   json={"prompt": f"{i}+1=", "max_tokens": 2}) for i in range(many)))
        bodies = [{"prompt": "a\x00b", "max_tokens": 2}, {"prompt": "a", "n": 10**9}, {"prompt": "a", "max_tokens": 10**12},
                  {"prompt": "a", "logprobs": 10**6}]
        for body in bodies:
            statuses.append(await attempt(client, "POST", "/v1/completions", headers=auth, json=body))
        statuses.append(await attempt(client, "POST", "/v1/completions", headers=auth, content=b"x" * (10 << 20)))
        for path in ("//v1/completions", "/v1%2Fcompletions", "/docs", "/openapi.json", "/metrics", "/health", "/v1/models"):
            for headers in ({}, auth):
                statuses.append(await attempt(client, "GET", path, headers=headers))
        # two prompts that fit the 2048-token cache one at a time, not together
        statuses += await asyncio.gather(*(attempt(client, "POST", "/v1/completions", headers=auth, timeout=300,
                                                   json={"prompt": f"b{i} " * 600, "max_tokens": 2}) for i in range(2)))
        # abandoned: the client gives up after 2 s on 16 prompts x n=4 x 1000 tokens, which would run for many minutes
        abandoned = await attempt(client, "POST", "/v1/completions", headers=auth, timeout=2.0,
                                  json={"prompt": [f"Tell story {i}." for i in range(16)], "n": 4, "max_tokens": 1000,
                                        "temperature": 1.0})
        t0 = time.perf_counter()
        after = await attempt(client, "POST", "/v1/completions", headers=auth, json={"prompt": "1+1=", "max_tokens": 2})
        after_s = time.perf_counter() - t0
        await slow
        stop.set()
        await asyncio.gather(*loops)
    served = [s for s in statuses if s]
    return {"sent": sent[0], "good_ok": good["ok"], "good_lost": good["failed"] + (after != 200),
            "5xx": sum(s >= 500 for s in served), "abandoned_status": abandoned, "after_s": after_s}


def server_abuse(work: Path, quick: bool) -> dict[str, Any]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([*X1, "serve", "policy", "--model", "smollm2", "--n-ctx", "2048", "--port", str(port), "--api-key", "k",
                             "--max-tokens-limit", "1024", "--log-level", "warning"], cwd=work, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("x1 serve policy did not start")
            time.sleep(0.5)
        httpx.post(f"{url}/v1/completions", headers={"Authorization": "Bearer k"}, json={"prompt": "warm", "max_tokens": 2}, timeout=60)
        rss_before = rss_mib(proc.pid)
        result = asyncio.run(abuse(url, port, quick))
        stopped = time.perf_counter()
        idle_after = None
        while time.perf_counter() - stopped < 30:
            c0 = cpu_seconds(proc.pid)
            time.sleep(1.0)
            if cpu_seconds(proc.pid) - c0 < 0.1:  # under 10% of a core over a second
                idle_after = time.perf_counter() - stopped
                break
        health = httpx.get(f"{url}/health", timeout=5).status_code
        result.update(rss_before=rss_before, rss_after=rss_mib(proc.pid), idle_s=idle_after, health_after=health)
        # SIGTERM while a long request decodes: the server must drain (cancel it) and exit within seconds
        busy = subprocess.Popen([sys.executable, "-c", "import httpx,sys; httpx.post(sys.argv[1], headers={'Authorization': 'Bearer k'}, "
                                 "json={'prompt': 'Tell a story.', 'n': 8, 'max_tokens': 1000, 'temperature': 1.0}, timeout=120)",
                                 f"{url}/v1/completions"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        result["sigterm_s"] = time.perf_counter() - start
        busy.kill()
        return result
    finally:
        if proc.poll() is None:
            proc.kill()


# -- the table -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 kill points per command and a short abuse run")
    parser.add_argument("--kills", type=int, default=None, help="kill points per command (default 20, or 3 with --quick)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: eval,train,fit,bad,serve")
    args = parser.parse_args()
    target = args.kills or (3 if args.quick else 20)
    skip = set(filter(None, args.skip.split(",")))
    rng = random.Random(20)
    from rich.console import Console
    from rich.table import Table

    table = Table("check", "tried", "result", title="x1 faults (benchmarks/faults.py)")

    def add_row(*cells: str) -> None:
        """Into the table, and printed at once: a run cut short still shows what it measured."""
        table.add_row(*cells)
        print(" | ".join(cells), f"({time.perf_counter() - start:.0f}s)", flush=True)

    work = Path(tempfile.mkdtemp(prefix="x1-faults-"))
    start = time.perf_counter()
    try:
        for name, fn in (("eval", eval_kills), ("train", train_kills), ("fit", fit_kills)):
            if name in skip:
                continue
            row = fn(work, target, rng)
            add_row(f"kill -9: {row['command']}", f"{row['kills']} kill points",
                          f"{row['unit']} lost: {row['lost']} · duplicates: {row['duplicates']} · results equal: "
                          f"{'yes' if row['equal'] else 'NO'}{row.get('detail', '')}")
        if "bad" not in skip:
            for name, code, line in bad_inputs(work):
                add_row(f"bad input: {name}", f"exit {code}", line)
        if "serve" not in skip:
            r = server_abuse(work, args.quick)
            idle = f"{r['idle_s']:.1f}s" if r["idle_s"] is not None else "NOT within 30s"
            add_row("serve policy under abuse", f"{r['sent']} requests",
                          f"good lost: {r['good_lost']} of {r['good_ok'] + r['good_lost']} · 5xx: {r['5xx']} · CPU idle "
                          f"{idle} after the load · RSS {r['rss_before']:.0f} → {r['rss_after']:.0f} MiB · /health {r['health_after']}")
            add_row("serve policy: abandoned request", "16 prompts × n=4 × 1000 tokens, client gone after 2 s",
                          f"next good request served in {r['after_s']:.1f}s")
            add_row("serve policy: SIGTERM mid-decode", "8 × 1000 tokens running", f"exited in {r['sigterm_s']:.1f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Console(width=200).print(table)
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
