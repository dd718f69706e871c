"""The policy server under load: many concurrent clients against one at a time, then abuse.

    python benchmarks/serve.py [--model default] [--duration 60] [--clients 64] [--max-tokens 16]
                               [--workload search|distinct] [--max-batch 32] [--max-wait-ms 5] [--gather] [--threads N]
                               [--abuse-duration S]

Starts `x1 serve policy` on 127.0.0.1 (a free port) and drives /v1/completions with short
generations (all traffic stays on loopback). Three phases, each ``--duration`` seconds (the
abuse phase ``--abuse-duration``, default half of it):

1. ``--clients`` concurrent clients, each sending its next request when the last one returns;
2. one client at a time (the unbatched baseline);
3. the concurrent load again with a few clients mixing in malformed and oversized requests:
   each must get a 4xx, no good request may be lost, and /health must answer OK after.

Prints requests/s, p50/p99 latency, the mean batch size (from /metrics: sequences per decode step
under continuous batching, per model call otherwise) and failures
per phase, and the throughput ratio of phase 1 over phase 2 (the target is >= 3x, zero failures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.table import Table

from x1.models._sampling import render_chatml

console = Console()
SYSTEM = "You are a careful reasoner. Solve the problem step by step. Finish with a line 'The answer is: <answer>'."
MAX_PROMPT_CHARS = 8000
MAX_TOKENS_LIMIT = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_prompts(k: int, workload: str = "search", seed: int = 0) -> list[str]:
    """``distinct``: every prompt a different question. ``search``: what tree search sends, a few
    questions each continued by different partial paths (long shared prefixes, short tails)."""
    rng = random.Random(seed)
    things = ["apples", "pencils", "marbles", "books", "coins", "stickers", "cookies", "cards"]

    def question(i: int) -> str:
        a, b, c = rng.randint(3, 60), rng.randint(2, 30), rng.randint(2, 9)
        return f"Problem {i}: Mia has {a} {rng.choice(things)}. She gets {b} more, then gives away a {c}th of them. How many are left?"

    if workload == "distinct":
        return [render_chatml([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(i)}]) for i in range(k)]
    heads = [render_chatml([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(i)}]) for i in range(8)]
    steps = ["First, add what she gets.\n\n", "Start from what Mia has.\n\n", "Then divide by the fraction.\n\n",
             "Next, work out the part she gives away.\n\n", "Subtract it from the total.\n\n"]
    return [rng.choice(heads) + "".join(rng.choice(steps) for _ in range(rng.randint(0, 3))) for _ in range(k)]


@dataclass
class PhaseResult:
    name: str
    clients: int
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    batches: float = 0.0
    sequences: float = 0.0
    bad_sent: int = 0
    bad_4xx: int = 0
    bad_other: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    @property
    def mean_batch(self) -> float:
        return self.sequences / self.batches if self.batches else 0.0


def scrape(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(x1_batch_size_(?:sum|count)) (\S+)$", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


def bad_requests(prompt: str) -> list[tuple[str, bytes]]:
    """(what, body) pairs that must each be refused with a 4xx."""
    ok = {"prompt": prompt, "max_tokens": 4}
    return [
        ("malformed JSON", b'{"prompt": "hello", "max_tokens": '),
        ("not an object", b'["prompt"]'),
        ("prompt of the wrong type", json.dumps({"prompt": 123}).encode()),
        ("max_tokens of the wrong type", json.dumps({**ok, "max_tokens": "lots"}).encode()),
        ("negative temperature", json.dumps({**ok, "temperature": -1}).encode()),
        ("oversized prompt", json.dumps({**ok, "prompt": "x" * (MAX_PROMPT_CHARS + 1000)}).encode()),
        ("max_tokens over the limit", json.dumps({**ok, "max_tokens": 100_000}).encode()),
        ("echo (unsupported)", json.dumps({**ok, "echo": True}).encode()),
        ("unknown model", json.dumps({**ok, "model": "gpt-17"}).encode()),
    ]


async def run_phase(url: str, name: str, clients: int, duration: float, prompts: list[str], max_tokens: int,
                    abusers: int = 0) -> PhaseResult:
    result = PhaseResult(name, clients)
    before = await asyncio.to_thread(scrape, url)
    limits = httpx.Limits(max_connections=clients + abusers + 4, max_keepalive_connections=clients + abusers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0, connect=10.0), limits=limits) as client:
        start = time.perf_counter()
        deadline = start + duration
        counter = iter(range(10**9))

        async def good_client() -> None:
            while time.perf_counter() < deadline:
                prompt = prompts[next(counter) % len(prompts)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7})
                except httpx.HTTPError as err:
                    result.failed += 1
                    result.errors.append(f"{type(err).__name__}: {err}")
                    continue
                if r.status_code == 200 and r.json()["choices"][0]["text"] is not None:
                    result.latencies.append(time.perf_counter() - t0)
                else:
                    result.failed += 1
                    result.errors.append(f"HTTP {r.status_code}: {r.text[:120]}")

        async def abuser(k: int) -> None:
            cases = bad_requests(prompts[k % len(prompts)])
            i = k
            while time.perf_counter() < deadline:
                what, body = cases[i % len(cases)]
                i += 1
                result.bad_sent += 1
                try:
                    r = await client.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
                except httpx.HTTPError as err:
                    result.bad_other.append(f"{what}: {type(err).__name__}")
                    continue
                if 400 <= r.status_code < 500:
                    result.bad_4xx += 1
                else:
                    result.bad_other.append(f"{what}: HTTP {r.status_code}")
                await asyncio.sleep(0.02)

        await asyncio.gather(*(good_client() for _ in range(clients)), *(abuser(k) for k in range(abusers)))
        result.wall_s = time.perf_counter() - start
    after = await asyncio.to_thread(scrape, url)
    result.batches = after.get("x1_batch_size_count", 0) - before.get("x1_batch_size_count", 0)
    result.sequences = after.get("x1_batch_size_sum", 0) - before.get("x1_batch_size_sum", 0)
    return result


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "x1.cli", "serve", "policy", "--model", args.model, "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--n-ctx", str(args.n_ctx),
           *(["--gather"] if args.gather else []),
           "--max-prompt-chars", str(MAX_PROMPT_CHARS), "--max-tokens-limit", str(MAX_TOKENS_LIMIT), "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise SystemExit(f"the server exited with {proc.returncode}: {err}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not become healthy within {timeout:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per load phase")
    parser.add_argument("--abuse-duration", type=float, default=None, help="seconds of the abuse phase (default: duration / 2)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workload", choices=("search", "distinct"), default="search",
                        help="search: prompts share long prefixes, as tree search sends them; distinct: every prompt a new question")
    parser.add_argument("--abusers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--gather", action="store_true", help="serve with --gather instead of continuous batching")
    parser.add_argument("--n-ctx", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads in the server (default: all cores)")
    args = parser.parse_args()
    abuse_duration = args.abuse_duration if args.abuse_duration is not None else args.duration / 2

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    console.print(f"starting x1 serve policy --model {args.model} on {url} ...")
    proc = start_server(args, port)
    try:
        wait_healthy(proc, url)
        prompts = make_prompts(256, args.workload)
        warm = httpx.post(f"{url}/v1/completions", json={"prompt": prompts[0], "max_tokens": 4}, timeout=300)
        warm.raise_for_status()
        console.print(f"phase 1: {args.clients} concurrent clients for {args.duration:g}s")
        many = asyncio.run(run_phase(url, f"{args.clients} clients", args.clients, args.duration, prompts, args.max_tokens))
        console.print(f"phase 2: 1 client for {args.duration:g}s")
        one = asyncio.run(run_phase(url, "1 client", 1, args.duration, prompts, args.max_tokens))
        console.print(f"phase 3: {args.clients} clients + {args.abusers} sending bad requests for {abuse_duration:g}s")
        abuse = asyncio.run(run_phase(url, f"{args.clients} clients + {args.abusers} abusers", args.clients, abuse_duration, prompts,
                                      args.max_tokens, abusers=args.abusers))
        health = httpx.get(f"{url}/health", timeout=30)
        after_ok = httpx.post(f"{url}/v1/completions", json={"prompt": prompts[1], "max_tokens": 4}, timeout=300).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()

    table = Table(title=f"x1 serve policy --model {args.model}: {args.workload} prompts, max_tokens {args.max_tokens}, "
                        f"max_batch {args.max_batch}, max_wait {args.max_wait_ms:g} ms")
    for col in ("phase", "requests ok", "failed", "req/s", "p50 latency", "p99 latency", "mean batch"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    for r in (many, one, abuse):
        table.add_row(r.name, str(r.ok), str(r.failed), f"{r.rps:.2f}", f"{r.pct(0.5):.2f}s", f"{r.pct(0.99):.2f}s", f"{r.mean_batch:.1f}")
    console.print(table)
    ratio = many.rps / one.rps if one.rps else float("inf")
    verdict = "meets" if ratio >= 3 and many.failed == 0 and one.failed == 0 else "MISSES"
    console.print(f"throughput ratio, {args.clients} clients / 1 client: [bold]{ratio:.2f}x[/] (target >= 3x, zero failures: {verdict})")
    lost = abuse.failed
    console.print(
        f"abuse: {abuse.bad_sent} bad requests sent, {abuse.bad_4xx} got a 4xx"
        + (f", {len(abuse.bad_other)} did not: {abuse.bad_other[:5]}" if abuse.bad_other else "")
        + f"; good requests lost: {lost}; /health after: HTTP {health.status_code} {health.json().get('status')}; "
        + f"a good request after: {'ok' if after_ok else 'FAILED'}"
    )
    for r in (many, one, abuse):
        if r.errors:
            console.print(f"[red]{r.name} errors (first 5):[/] {r.errors[:5]}")
    if (verdict == "MISSES" or lost or abuse.bad_other or health.status_code != 200 or not after_ok):
        sys.exit(1)


if __name__ == "__main__":
    main()
