"""`x1 eval --workers N`: the same evaluation, its problems spread over Ray actors.

Each actor opens its own policy and runs its shard through ``run_tasks``, the loop of the
in-process run; as each problem finishes, the actor puts its trace line on a Ray queue and the
driver appends it to ``traces.jsonl`` (and counts it in the progress bar), so ``--resume``
reads them like those of any other run. Sampling
seeds come from the task id (``request_seed``, ``problem_seed``), never from a problem's
place in a batch, so sharding changes no outcome of a deterministic backend.

What is lost when a distributed run is interrupted: the problems still in flight (finished
problems are on disk); actors keep no checkpoint of their graphs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import x1
from x1.config import RunConfig
from x1.models.base import Backend
from x1.pipelines.evaluate import EvalError, EvalResult, open_run, write_results
from x1.pipelines.run_clock import RunClock
from x1.pipelines.solve import open_policy, run_tasks
from x1.strategies import build_strategy
from x1.tasks.base import Task

RAY_MISSING = "Ray is not installed; fix: pip install 'x1[ray]'"
FORWARDED_ENV = ("OPENAI_API_KEY", "X1_VALUE_API_KEY")


class ShardWorker:
    """One Ray actor: its own policy, opened on first use, so a model that fails to load fails the call with its own error."""

    def __init__(self, config_data: dict[str, Any]) -> None:
        self.config = RunConfig.model_validate(config_data)
        self.policy: Backend | None = None

    def run(self, tasks: list[Task], queue: Any) -> int:
        """Put each trace line of ``tasks`` on ``queue`` as its problem finishes, exactly as ``run_tasks`` writes it
        for an in-process run; how many lines were put."""
        if self.policy is None:
            self.policy = open_policy(self.config)
        sent = 0
        with tempfile.TemporaryDirectory(prefix="x1-shard-") as tmp:
            trace = Path(tmp) / "traces.jsonl"
            trace.touch()
            with trace.open() as written:

                def forward(_outcome: Any) -> None:  # run_tasks has flushed the problem's line before it calls this
                    nonlocal sent
                    for line in written.read().splitlines():
                        queue.put(line)
                        sent += 1

                run_tasks(tasks, self.config, policy=self.policy, trace_path=trace, on_done=forward)
        return sent


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise EvalError(RAY_MISSING) from err
    return ray


def probe(address: str, timeout: float = 5.0) -> None:
    """Raise OSError when nothing listens at a HOST:PORT address: ray.init would retry it for many minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # auto, local, ray://: Ray itself fails fast on those
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def connect(ray: Any, address: str | None, workers: int) -> bool:
    """Join the cluster at ``address``, or start a local one of ``workers`` CPUs; True when this call started Ray."""
    if ray.is_initialized():
        return False
    if address and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise EvalError(f"--address {address!r} is a Ray Client address, which needs Ray's client extra; "
                        "fix: pip install 'ray[client]', or run x1 on a cluster node with --address auto")
    if address:
        try:
            probe(address)
        except OSError as err:
            raise EvalError(
                f"no Ray cluster answers at --address {address!r} ({err}); "
                "fix: start one with `ray start --head` (then pass --address auto), or correct --address"
            ) from err
    try:
        if address:
            # Ship this x1 to the cluster, so every worker runs the driver's code, not whatever its node has installed,
            # with the API keys of the policy and value servers (a cluster's workers do not inherit the driver's environment).
            runtime_env: dict[str, Any] = {"py_modules": [str(Path(x1.__file__).parent)], "excludes": ["__pycache__"]}
            keys = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            if keys:
                runtime_env["env_vars"] = keys
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        else:
            # "local": a fresh cluster even when another one runs on this machine.
            ray.init(address="local", num_cpus=workers, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    except Exception as err:  # ConnectionError, RuntimeError, ValueError, gRPC errors: all mean no usable cluster there
        detail = " ".join(str(err).split())[:200]
        if not address:
            message = f"could not start a local Ray cluster: {detail}; fix: see the logs under /tmp/ray, or run without --workers"
            raise EvalError(message) from err
        raise EvalError(
            f"could not join the Ray cluster at --address {address!r} ({detail}); fix: start one with `ray start --head` "
            "and pass --address auto on its head node; from another machine export RAY_AUTH_MODE=token with the token of "
            "`ray get-auth-token` in ~/.ray/auth_token, and match the cluster's Ray and Python versions"
        ) from err
    return True


def _unwrap(ray: Any, err: Exception) -> Exception:
    """The error an actor raised (a BackendError stays a BackendError), without Ray's remote traceback."""
    cause = getattr(err, "cause", None)
    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        return cause
    detail = " ".join(str(err).split())[:300]
    return EvalError(f"a Ray worker failed: {detail}; fix: see `ray logs`, then pass --resume to run only the unfinished problems")


def run_shards(
    ray: Any, todo: list[Task], config: RunConfig, trace_path: Path, workers: int, on_done: Callable[[dict[str, Any]], None] | None
) -> str | None:
    """Run ``todo`` over up to ``workers`` actors, appending each problem's record as it finishes; the policy's name."""
    from ray.util.queue import Queue

    n = min(workers, len(todo))
    shards = [todo[k::n] for k in range(n)]  # round robin: hard problems spread evenly when a data set is sorted
    actor_cls = ray.remote(num_cpus=1)(ShardWorker)
    config_data = config.model_dump()
    queue = Queue(actor_options={"num_cpus": 0})  # the workers hold every CPU of a local cluster
    actors = [actor_cls.remote(config_data) for _ in shards]
    pending = [actor.run.remote(shard, queue) for actor, shard in zip(actors, shards, strict=True)]
    model_name = None
    sent = received = 0
    try:
        with trace_path.open("a") as fh:

            def drain() -> int:
                nonlocal model_name
                size = queue.qsize()
                lines = queue.get_nowait_batch(size) if size else []
                fh.write("".join(line + "\n" for line in lines))
                fh.flush()
                for line in lines:
                    record = json.loads(line)
                    model_name = record.get("model", model_name)
                    if on_done:
                        on_done(record)
                return len(lines)

            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                received += drain()
                for ref in ready:
                    try:
                        sent += ray.get(ref)
                    except ray.exceptions.RayError as err:
                        raise _unwrap(ray, err) from None
            received += drain()  # a shard's puts all land before its run returns
        if received != sent:
            raise EvalError(f"the Ray workers finished {sent} problems but {received} trace lines arrived; fix: pass --resume")
    finally:
        for actor in actors:
            ray.kill(actor)
        ray.kill(queue.actor)
    return model_name


def evaluate_distributed(
    tasks: list[Task],
    config: RunConfig,
    out_dir: Path,
    task_spec: str,
    workers: int,
    address: str | None = None,
    resume: bool = False,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    on_skip: Callable[[int], None] | None = None,
) -> EvalResult:
    """``evaluate`` over ``workers`` Ray actors; ``on_done`` gets each finished problem's trace record."""
    if workers < 1:
        raise EvalError(f"--workers {workers}: a distributed run needs at least 1 worker; fix: pass --workers N, or 0 for in-process")
    ray = import_ray()
    build_strategy(config.search.strategy, **config.search.params)  # a bad strategy or parameter fails here, before Ray starts
    todo, resumed = open_run(tasks, config, out_dir, resume, task_spec)
    if on_skip:
        on_skip(resumed)
    clock = RunClock(out_dir, resume, count_cpu=False)  # the work runs in the workers' processes, not this one
    model_name = config.model.name
    if todo:
        started = connect(ray, address, workers)
        try:
            model_name = run_shards(ray, todo, config, out_dir / "traces.jsonl", workers, on_done) or model_name
        finally:
            if started:
                ray.shutdown()
    return write_results(tasks, config, out_dir, task_spec, model_name, clock, resumed)
