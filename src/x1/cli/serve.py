"""`x1 serve policy|value`: the batched HTTP servers, under uvicorn in this process or on Ray Serve replicas."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from x1.cli.options import ModelOpt
from x1.cli.root import err_console, fail
from x1.config import DEFAULT_MODEL
from x1.models.base import BackendError

serve_app = typer.Typer(no_args_is_help=True, help="Serve a policy (OpenAI-compatible) or a value model over HTTP, batched.")

HostOpt = Annotated[str, typer.Option(help="address to bind (loopback by default; pass --api-key before exposing it)")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="X1_API_KEY", help="require 'Authorization: Bearer KEY' on /v1")]
MaxBatchOpt = Annotated[int, typer.Option(min=1, help="most sequences per model call")]
MaxWaitOpt = Annotated[float, typer.Option(min=0.0, help="how long to gather a batch after its first request (ms)")]
RayServeOpt = Annotated[bool, typer.Option("--ray-serve", help="deploy on Ray Serve (http://HOST:PORT/policy or /value), not uvicorn")]
ReplicasOpt = Annotated[int, typer.Option(min=1, help="with --ray-serve: replicas, each with its own model and batcher")]
ReplicaCpusOpt = Annotated[float, typer.Option(min=0.01, help="with --ray-serve: CPUs Ray reserves per replica (and its model threads)")]
RayAddressOpt = Annotated[str | None, typer.Option(help="with --ray-serve: Ray cluster to join (auto, HOST:6379); default: a local one")]
NCtxOpt = Annotated[int, typer.Option(min=256, help="llama.cpp context size (tokens, shared by the batch)")]
ServeThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for the model (default: all)")]
ServedNameOpt = Annotated[str | None, typer.Option(help="model id clients send (default: the model's name)")]
LogLevelOpt = Annotated[str, typer.Option(help="uvicorn log level")]
ValueModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="a trained evaluator: value:DIR, prm:DIR, orm:DIR or a folder from `x1 fit value|prm|orm` (served with "
    "its head); or any policy model (bundled name, .gguf, folder), scored by mean token probability")]


def _parse_adapters(specs: list[str]) -> dict[str, str]:
    """``NAME=PATH`` options as a name -> folder map (a name given twice is a mistake, not an override)."""
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise BackendError(f"--adapter {spec!r} is not NAME=PATH; fix: e.g. --adapter math=runs/sft")
        if name in adapters:
            raise BackendError(f"--adapter {name!r} is given twice; fix: give each adapter its own name")
        adapters[name] = path
    return adapters


def _load_with_adapters(model: str, adapters: dict[str, str], threads: int | None) -> Any:
    """A transformers backend with LoRA adapters over one base (llama.cpp cannot switch adapters per request)."""
    from x1.models.registry import load_backend, resolve_model

    spec = resolve_model(model)
    if spec.kind != "hf":
        raise BackendError(
            f"--adapter needs a transformers model, but {model!r} runs on {spec.kind}; "
            "fix: pass the base model's transformers folder, or hf:NAME / hf:FILE.gguf"
        )
    return load_backend(spec, adapters=adapters, **({"threads": threads} if threads else {}))


def _serve(kind: str, model: str, host: str, port: int, api_key: str | None, max_batch: int, max_wait_ms: float, n_ctx: int,
           threads: int | None, served_name: str | None, log_level: str, limits: dict[str, int | bool],
           adapters: list[str] | None = None) -> None:
    """Load the model (with its adapters, for a policy), build the app, run uvicorn until Ctrl-C, then free the model."""
    from x1.serve.run import check_exposure, load_serving_backend, load_value_scorer, run_app

    try:
        if adapters:
            backend = _load_with_adapters(model, _parse_adapters(adapters), threads)
        elif kind == "value":
            backend = load_value_scorer(model, n_ctx=n_ctx, n_seq_max=max(64, 2 * max_batch), threads=threads)
        else:
            backend = load_serving_backend(model, n_ctx=n_ctx, n_seq_max=max(64, 2 * max_batch), threads=threads)
    except (BackendError, ValueError) as err:
        fail(str(err))
    try:
        if kind == "policy":
            from x1.serve.policy import create_policy_app

            server = create_policy_app(backend, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                       model_name=served_name, **limits)
            route = "/v1/completions, /v1/chat/completions"
        else:
            from x1.serve.value import create_value_app

            server = create_value_app(backend, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                      model_name=served_name, **limits)
            route = "/v1/score"
        if warning := check_exposure(host, api_key):
            err_console.print(f"[bold yellow]warning:[/] {warning}")
        err_console.print(f"x1 {kind} server: {served_name or backend.name} at http://{host}:{port}/v1 ({route}; /health, /metrics)")
        if adapters:
            err_console.print(f"LoRA adapters (the request's model field picks one): {', '.join(getattr(backend, 'adapters', {}))}")
        run_app(server, host, port, log_level)
    except BackendError as err:
        fail(str(err))
    finally:
        backend.close()


def _serve_ray(kind: str, model: str, host: str, port: int, api_key: str | None, max_batch: int,
               max_wait_ms: float, n_ctx: int, threads: int | None, served_name: str | None, limits: dict[str, int | bool], replicas: int,
               replica_cpus: float, address: str | None) -> None:
    """`--ray-serve`: the same app on Ray Serve replicas; blocks until Ctrl-C, then removes the deployment."""
    from x1.serve.ray_serve import RayServeError, ReplicaSpec, deploy, wait_for_interrupt
    from x1.serve.run import check_exposure

    # Each replica's model gets the CPUs Ray reserves for it, not all of the node's (replicas would fight over them).
    spec = ReplicaSpec(kind, model, api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms, n_ctx=n_ctx,
                       threads=threads or max(1, int(replica_cpus)), served_name=served_name, limits=limits)
    if warning := check_exposure(host, api_key):
        err_console.print(f"[bold yellow]warning:[/] {warning}")
    err_console.print(f"deploying the x1 {kind} app on Ray Serve: {replicas} replica(s) of {model} ...")
    try:
        running = deploy(spec, replicas=replicas, num_cpus=replica_cpus, host=host, port=port, address=address)
    except (RayServeError, BackendError, ValueError) as err:
        fail(str(err))
    route = "/v1/completions, /v1/chat/completions" if kind == "policy" else "/v1/score"
    err_console.print(f"x1 {kind} server on Ray Serve: {served_name or model} at {running.url}/v1 ({route}; /health, /metrics)")
    err_console.print("Ctrl-C removes the deployment")
    try:
        wait_for_interrupt()
    finally:
        err_console.print(f"removing the x1 {kind} deployment")
        running.shutdown()


@serve_app.command("policy")
def serve_policy(
    model: ModelOpt = DEFAULT_MODEL,
    host: HostOpt = "127.0.0.1",
    port: int = 8000,
    api_key: ApiKeyOpt = None,
    max_batch: MaxBatchOpt = 32,
    max_wait_ms: MaxWaitOpt = 5.0,
    max_prompt_chars: Annotated[int, typer.Option(min=1, help="longest prompt accepted (characters); longer ones get 413")] = 65536,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="largest max_tokens accepted; larger gets 400")] = 4096,
    n_ctx: NCtxOpt = 32768,
    threads: ServeThreadsOpt = None,
    served_name: ServedNameOpt = None,
    log_level: LogLevelOpt = "info",
    ray_serve: RayServeOpt = False,
    replicas: ReplicasOpt = 1,
    replica_cpus: ReplicaCpusOpt = 1.0,
    address: RayAddressOpt = None,
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", help="NAME=PATH: a LoRA adapter folder served over the same base, picked by the request's model field; "
        "repeatable; transformers models only")] = None,
    continuous: Annotated[bool, typer.Option(
        "--continuous/--gather", help="continuous: requests join the running decode each token step (llama.cpp); "
        "gather: wait --max-wait-ms, then decode the gathered batch to the end")] = True,
) -> None:
    """OpenAI-compatible completions and chat for a policy model, with dynamic batching."""
    limits = {"max_prompt_chars": max_prompt_chars, "max_tokens_limit": max_tokens_limit, "continuous": continuous}
    if ray_serve and adapter:
        fail("--adapter is not supported with --ray-serve yet; fix: serve the adapters with uvicorn (drop --ray-serve)")
    if ray_serve:
        _serve_ray("policy", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name, limits, replicas,
                   replica_cpus, address)
        return
    _serve("policy", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name, log_level, limits, adapter)


@serve_app.command("value")
def serve_value(
    model: ValueModelOpt = DEFAULT_MODEL,
    host: HostOpt = "127.0.0.1",
    port: int = 8001,
    api_key: ApiKeyOpt = None,
    max_batch: MaxBatchOpt = 32,
    max_wait_ms: MaxWaitOpt = 5.0,
    max_prompt_chars: Annotated[int, typer.Option(min=1, help="longest prompt + continuation accepted (characters)")] = 65536,
    n_ctx: NCtxOpt = 32768,
    threads: ServeThreadsOpt = None,
    served_name: ServedNameOpt = None,
    log_level: LogLevelOpt = "info",
    ray_serve: RayServeOpt = False,
    replicas: ReplicasOpt = 1,
    replica_cpus: ReplicaCpusOpt = 1.0,
    address: RayAddressOpt = None,
) -> None:
    """POST /v1/score: scores in [0, 1] for reasoning paths, from a trained value model / PRM / ORM or a policy's token probabilities."""
    if ray_serve:
        _serve_ray("value", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name,
                   {"max_prompt_chars": max_prompt_chars}, replicas, replica_cpus, address)
        return
    _serve("value", model, host, port, api_key, max_batch, max_wait_ms, n_ctx, threads, served_name, log_level,
           {"max_prompt_chars": max_prompt_chars})
