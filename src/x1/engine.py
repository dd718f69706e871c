"""The one loop: many problems advance together, their model calls batched.

Each active problem's strategy is asked for requests; *all* generate requests of *all*
problems go to one decode stream of the policy, and the evaluate requests of every problem
whose generations are back go to each evaluator in a single call. With a continuous backend
(llama.cpp) a problem asks again as soon as its own round is back, so the batch refills as
sequences finish; otherwise each step is one ``generate`` call for everything (lock-step).
Budgets are enforced per problem; graphs are checkpointed so an interrupted run resumes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from x1.evaluators.base import EvalItem, Evaluator
from x1.graph import ReasoningGraph, Thought
from x1.models.base import Backend, BackendError, Completion, ContextFull, DecodeStream, GenerationRequest, LockStepStream, open_stream
from x1.operators.generate import attach_children
from x1.operators.select import to_unit
from x1.outcome import Outcome
from x1.strategies.base import Evaluate, Expand, Problem, Reply, Request, Strategy
from x1.tasks.base import Task


@dataclass
class Budget:
    """Per-problem limits; None means unlimited. Tokens count prefilled plus generated."""

    max_tokens: int | None = None
    max_policy_calls: int | None = None
    max_nodes: int | None = None
    max_seconds: float | None = None

    def exceeded(self, graph: ReasoningGraph, elapsed_s: float) -> str:
        if self.max_nodes is not None and len(graph) >= self.max_nodes:
            return "node budget"
        if self.max_seconds is not None and elapsed_s >= self.max_seconds:
            return "time budget"
        if self.max_tokens is None and self.max_policy_calls is None:
            return ""  # summing compute walks the whole graph: only when a limit needs it
        compute = graph.total_compute()
        if self.max_tokens is not None and compute.tokens >= self.max_tokens:
            return "token budget"
        if self.max_policy_calls is not None and compute.policy_calls >= self.max_policy_calls:
            return "call budget"
        return ""


@dataclass
class Sampling:
    """Defaults for generate requests that do not set their own."""

    temperature: float = 0.7
    top_p: float = 1.0


def promise(thought: Thought) -> float:
    """How likely a search is to extend ``thought``, in [0, 1]: its value, else its best score, else 0.5."""
    if thought.value is not None:
        return to_unit(thought.value)
    if thought.scores:
        return min(1.0, max(0.0, max(thought.scores.values())))
    return 0.5


def request_seed(base_seed: int, task_id: str, thought_id: int, counter: int) -> int:
    """A seed that depends only on where a request comes from, never on batch order."""
    digest = hashlib.blake2b(f"{base_seed}|{task_id}|{thought_id}|{counter}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def problem_seed(base_seed: int, task_id: str) -> int:
    """A problem's own seed: from its task id, so sharding or reordering a data set changes no problem."""
    return request_seed(base_seed, task_id, -1, 0)


@dataclass
class _Round:
    """One problem's outstanding requests, from ``ask`` until every generation is back."""

    requests: list[Request]
    completions: dict[int, list[Completion]] = field(default_factory=dict)  # by position in requests
    waiting: int = 0  # generations not back yet


@dataclass
class Engine:
    policy: Backend
    evaluators: dict[str, Evaluator] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0
    checkpoint_path: Path | None = None
    checkpoint_every: int = 1  # ticks
    # ...and at least this many seconds apart: with continuous batching a tick (some problem's
    # round coming back) can happen every decode step, and a checkpoint writes every graph.
    checkpoint_interval_s: float = 0.0
    on_tick: Callable[[int, list[Problem]], None] | None = None
    on_done: Callable[[Outcome], None] | None = None
    # At most this many problems in flight; the next starts as soon as one finishes. Keeps the
    # live sequences within the backend's cache slots (e.g. 32 problems × best-of-8 = 256).
    max_active: int | None = None
    # Live sequences (generations submitted, not finished) at which no new problem is admitted;
    # problems already in flight always ask their next round. None: 3/16 of the sequence slots
    # of a continuous backend (the rest keep the paths just generated cached for the next round:
    # a live sequence's slot is not a prefix cache), unlimited on lock-step backends.
    max_live: int | None = None
    # Count live sequences as the stream does (``live_sequences``: a request's finished children
    # no longer count while its slowest one decodes) when it can say; False counts every sequence
    # of a request until the whole request is back (the benchmark's "before").
    live_from_stream: bool = True
    # False: lock-step ticks (one generate call for every problem's round) even on a backend that
    # streams; for comparisons, since a batch's composition shifts llama.cpp's float sums.
    continuous: bool = True
    ticks: int = 0
    # Cached completions a prompt may still extend, per problem (thought id -> the backend's cache_ref),
    # and those no prompt will: ranked for a backend with ``rank_cached``, so its cache evicts the worthless first.
    _cache_refs: dict[int, dict[int, int]] = field(default_factory=dict, init=False, repr=False)
    _dead_refs: list[int] = field(default_factory=list, init=False, repr=False)

    # -- public ---------------------------------------------------------------------------
    def run(self, tasks: list[Task], strategy: Strategy) -> list[Outcome]:
        """Solve every task; outcomes come back in task order.

        Each problem works in *rounds*: ask, serve every request, tell. A round's generate
        requests go to the policy's decode stream; with a continuous backend a problem whose
        round finished asks its next one while others still decode, so the batch is refilled
        instead of waiting for its longest sequence. Otherwise every step serves all problems'
        rounds in one ``generate`` call: the classic lock-step tick.
        """
        if self.max_active is not None and self.max_active < 1:
            raise ValueError(f"max_active={self.max_active}: at least one problem must run; fix: pass 1 or more, or None for all")
        if self.max_live is not None and self.max_live < 1:
            raise ValueError(f"max_live={self.max_live}: at least one sequence must run; fix: pass 1 or more, or None for automatic")
        problems, started = self._start(tasks, strategy)
        self._cache_refs, self._dead_refs = {}, []  # problem indices are this run's
        outcomes: dict[int, Outcome] = {}
        limit = len(problems) if self.max_active is None else self.max_active
        target = self.live_target()
        # A resumed, half-grown graph is in flight from the start; the rest are admitted in task order.
        admitted = {i for i, p in enumerate(problems) if len(p.graph) > 1}
        rounds: dict[int, _Round] = {}
        owner: dict[int, tuple[int, int]] = {}  # stream ticket -> (problem, index of its Expand in the round)
        live = 0  # sequences submitted and not back yet
        stream = open_stream(self.policy) if self.continuous else LockStepStream(self.policy)
        counted = getattr(stream, "live_sequences", None) if self.live_from_stream else None
        last_checkpoint = time.perf_counter()
        # Graphs are long-lived and reference thoughts by id (no cycles): each tick moves what exists
        # into the collector's permanent generation, so its passes do not rescan every tree and an
        # expansion costs the same in a tree of 30,000 nodes as in one of 3,000. Not when someone
        # else froze objects: that is theirs to manage.
        freeze = gc.isenabled() and gc.get_freeze_count() == 0
        ready: list[int] = []

        def serve(i: int) -> bool:
            """Ask problem ``i`` for its next round and submit it; False once it is finished."""
            nonlocal live
            if i in rounds:
                return True
            p = problems[i]
            reason = self.budget.exceeded(p.graph, time.perf_counter() - started[i])
            requests = [] if reason else strategy.ask(p)
            if not requests:
                p.done, p.stop_reason = True, reason or "finished"
                outcomes[i] = self._finish(p, strategy, time.perf_counter() - started[i])
                self._rank_cache(problems, [i])
                return False
            submitted = self._submit(stream, p, requests, i, owner)
            if submitted is None:
                p.done, p.stop_reason = True, "context full"
                outcomes[i] = self._finish(p, strategy, time.perf_counter() - started[i])
                self._rank_cache(problems, [i])
                return False
            rounds[i] = submitted
            live += sum(r.n for r in requests if isinstance(r, Expand))
            if not rounds[i].waiting:
                ready.append(i)
            return True

        try:
            while True:
                unfinished = [i for i, p in enumerate(problems) if not p.done]
                if not unfinished:
                    break
                ready.clear()
                # Problems in flight ask first; then new ones are admitted, in task order, while the
                # live sequences are under the target: the batch stays full as problems finish.
                in_flight = sum(serve(i) for i in unfinished if i in admitted)
                for i in unfinished:
                    if in_flight >= limit or (live if counted is None else counted()) >= target:
                        break
                    if i not in admitted:
                        admitted.add(i)
                        started[i] = time.perf_counter()
                        in_flight += serve(i)
                if stream.busy:
                    for ticket, completions in stream.step():
                        if ticket not in owner:
                            continue  # a dropped round's request that a stream without cancel still ran
                        i, k = owner.pop(ticket)
                        live -= len(completions)
                        rounds[i].completions[k] = completions
                        rounds[i].waiting -= 1
                        if rounds[i].waiting == 0:
                            ready.append(i)
                if not ready:
                    continue  # still decoding, or every active problem finished: admit the next ones
                ready.sort()
                replies = self._complete(problems, {i: rounds.pop(i) for i in ready})
                for i in ready:
                    strategy.tell(problems[i], replies[i])
                self._rank_cache(problems, ready)
                self.ticks += 1
                if freeze:
                    gc.freeze()
                if self.on_tick:
                    self.on_tick(self.ticks, problems)
                if (self.checkpoint_path and self.ticks % self.checkpoint_every == 0
                        and time.perf_counter() - last_checkpoint >= self.checkpoint_interval_s):
                    self._checkpoint(problems, strategy)
                    last_checkpoint = time.perf_counter()
        finally:
            stream.close()
            if freeze:
                gc.unfreeze()  # back to the oldest generation: collectable again once the run lets go
        if self.checkpoint_path:
            self._checkpoint(problems, strategy)
        return [outcomes[i] for i in range(len(problems))]

    def live_target(self) -> int:
        """Live sequences at which admission pauses: ``max_live``, or 3/16 of a continuous backend's slots.

        The other slots keep recently generated paths cached for each problem's next round, and fewer
        problems in flight share them. MCTS (16 iterations, expand 3) re-prefilled per generated token:
        on 32 problems 0.21 with half the slots live, 0.07 with a quarter; on 128, 0.14 with a quarter and
        0.08 with 3/16 (``benchmarks/cache_replay.py --max-live``), while llama.cpp's batched rate on a
        CPU is flat from 32 to 64 sequences.
        """
        if self.max_live is not None:
            return self.max_live
        caps = self.policy.capabilities
        if caps.continuous and caps.max_batch > 1:
            return max(1, caps.max_batch * 3 // 16)
        return 1 << 62

    # -- internals ------------------------------------------------------------------------
    def _start(self, tasks: list[Task], strategy: Strategy) -> tuple[list[Problem], list[float]]:
        resumed = self._load_checkpoint(strategy)
        problems = []
        for task in tasks:
            seed = problem_seed(self.seed, task.id)
            if task.id in resumed:
                problem = Problem(task=task, graph=resumed[task.id], seed=seed)
            else:
                graph = ReasoningGraph(problem=task.question)
                graph.meta["prefix"] = self.policy.format_chat(task.messages())
                problem = Problem(task=task, graph=graph, seed=seed)
                strategy.start(problem)
            problems.append(problem)
        now = time.perf_counter()
        return problems, [now] * len(problems)

    def _prompt(self, problem: Problem, request: Expand) -> str:
        if request.prompt is not None:
            return request.prompt
        return problem.graph.meta["prefix"] + problem.graph.path_text(request.thought_id)

    def _submit(
        self, stream: DecodeStream, p: Problem, requests: list[Request], i: int, owner: dict[int, tuple[int, int]]
    ) -> _Round | None:
        """Send a round's generate requests to the stream; its evaluations wait for the round's end.

        None when a prompt no longer fits in a sequence's cells (``ContextFull``): nothing of the round
        stays submitted, and the caller ends the problem."""
        current = _Round(requests)
        # The request counter moves on only when the round is told, so a checkpoint taken while
        # the round decodes resumes with the very same seeds.
        counter = p.graph.meta.get("requests", 0)
        expands = [(k, r) for k, r in enumerate(requests) if isinstance(r, Expand)]
        submitted: list[int] = []
        for j, (k, r) in enumerate(expands):
            try:
                ticket = self._submit_one(stream, p, r, counter + j)
            except ContextFull:
                cancel = getattr(stream, "cancel", None)
                for earlier in submitted:  # the round is dropped whole: the problem ends here
                    owner.pop(earlier)
                    if cancel is not None:
                        cancel(earlier)
                return None
            submitted.append(ticket)
            owner[ticket] = (i, k)
        current.waiting = len(expands)
        return current

    def _submit_one(self, stream: DecodeStream, p: Problem, r: Expand, index: int) -> int:
        fmt = p.task.step_format
        return stream.submit(
            GenerationRequest(
                prompt=self._prompt(p, r),
                n=r.n,
                max_tokens=r.max_tokens or fmt.max_step_tokens,
                temperature=self.sampling.temperature if r.temperature is None else r.temperature,
                top_p=self.sampling.top_p,
                stop=r.stop if r.stop is not None else ([fmt.delimiter] if fmt.delimiter else []),
                seed=request_seed(self.seed, p.task.id, r.thought_id, index),
                signals=r.signals,
            )
        )

    def _complete(self, problems: list[Problem], rounds: dict[int, _Round]) -> dict[int, list[Reply]]:
        """Attach what the policy generated, then run every evaluation these rounds asked for:
        one call per evaluator across all of them."""
        replies: dict[int, list[Reply]] = {i: [] for i in rounds}
        to_score: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, current in rounds.items():
            p = problems[i]
            p.graph.meta["requests"] = p.graph.meta.get("requests", 0) + len(current.completions)  # one per Expand
            for k, r in enumerate(current.requests):
                if not isinstance(r, Expand):
                    continue
                completions = current.completions[k]
                if r.attach:
                    children = attach_children(p.graph, p.task, r.thought_id, completions, r.tag)
                    held = self._cache_refs.setdefault(i, {})
                    for child, c in zip(children, completions, strict=True):
                        if c.cache_ref is not None:
                            held[child.id] = c.cache_ref
                    replies[i].append(Reply(r, thought_ids=[c.id for c in children]))
                    if r.evaluator:
                        to_score[r.evaluator].extend((i, c.id) for c in children)
                else:
                    self._dead_refs.extend(c.cache_ref for c in completions if c.cache_ref is not None)  # a rollout: never extended
                    p.graph[r.thought_id].compute.policy_calls += 1
                    p.graph[r.thought_id].compute.prompt_tokens += sum(c.prompt_tokens for c in completions)
                    p.graph[r.thought_id].compute.generated_tokens += sum(c.generated_tokens for c in completions)
                    replies[i].append(Reply(r, completions=completions))
        self._evaluate(problems, to_score)
        evals: dict[str, list[tuple[int, int]]] = defaultdict(list)
        owners: list[tuple[int, Evaluate]] = []
        for i, current in rounds.items():
            for r in current.requests:
                if isinstance(r, Evaluate):
                    evals[r.evaluator].extend((i, tid) for tid in r.thought_ids)
                    owners.append((i, r))
        if evals:
            scored = self._evaluate(problems, evals)
            for i, r in owners:
                replies[i].append(Reply(r, thought_ids=list(r.thought_ids), scores=[scored[(r.evaluator, i, t)] for t in r.thought_ids]))
        return replies

    def _rank_cache(self, problems: list[Problem], indices: list[int]) -> None:
        """Tell the policy what its cached completions are worth: nothing for a thought that has children,
        is final or pruned, for every thought of a finished problem and for a rollout (no prompt will
        extend them); for a leaf the search may still expand, how promising it looks. Its cache evicts
        the worthless first, then the least promising: under MCTS most paths are never expanded, and
        least-recently-used, blind to that, evicts the leaves of the problem whose turn comes next."""
        rank = getattr(self.policy, "rank_cached", None)
        ranks: dict[int, float | None] = dict.fromkeys(self._dead_refs)
        self._dead_refs = []
        for i in indices:
            held = self._cache_refs.get(i)
            if not held:
                continue
            if problems[i].done:
                ranks.update(dict.fromkeys(held.values()))
                del self._cache_refs[i]
                continue
            thoughts = problems[i].graph.thoughts
            for tid in list(held):
                thought = thoughts.get(tid)
                if thought is None or thought.children or thought.terminal or thought.pruned:
                    ranks[held.pop(tid)] = None
                else:
                    ranks[held[tid]] = promise(thought)
        if ranks and rank is not None:
            rank(ranks)

    def _evaluate(self, problems: list[Problem], wanted: dict[str, list[tuple[int, int]]]) -> dict[tuple[str, int, int], float]:
        scored: dict[tuple[str, int, int], float] = {}
        for name, pairs in wanted.items():
            evaluator = self.evaluators.get(name)
            if evaluator is None:
                raise BackendError(f"no evaluator named {name!r}; configured: {sorted(self.evaluators) or 'none'}")
            items = [EvalItem(problems[i].task, problems[i].graph, tid, problems[i].graph.meta["prefix"]) for i, tid in pairs]
            calls_before, tokens_before = evaluator.model_calls, getattr(evaluator, "model_tokens", 0)
            scores = evaluator.evaluate(items)
            calls = evaluator.model_calls - calls_before
            tokens = getattr(evaluator, "model_tokens", 0) - tokens_before
            for (i, tid), s in zip(pairs, scores, strict=True):
                problems[i].graph[tid].scores[name] = s
                scored[(name, i, tid)] = s
            # Charge the evaluator's calls to the problems it served, spread evenly; its tokens by each one's items.
            served = {i for i, _ in pairs}
            if calls and pairs:
                for i in served:
                    problems[i].graph.root.compute.evaluator_calls += max(1, calls // len(served))
            if tokens and pairs:
                for i, share in _shares(tokens, [i for i, _ in pairs]).items():
                    problems[i].graph.root.compute.evaluator_tokens += share
            if calls and not hasattr(evaluator, "model_tokens"):  # a server's or the policy's work: not counted here
                for i in served:
                    uncounted = problems[i].graph.meta.setdefault("uncounted_evaluators", [])
                    if name not in uncounted:
                        uncounted.append(name)
        return scored

    def _finish(self, problem: Problem, strategy: Strategy, wall_s: float) -> Outcome:
        thought = strategy.answer(problem)
        answer = thought.answer if thought is not None else None
        if thought is not None and answer is None:
            answer = problem.task.extract_answer(problem.graph.path_text(thought.id))
        verdict = problem.task.verify(answer)
        problem.graph.meta["done"] = True
        outcome = Outcome(problem.task, problem.graph, thought, answer, verdict.score, verdict.reason, problem.stop_reason, wall_s)
        if self.on_done:
            self.on_done(outcome)
        return outcome

    def _checkpoint(self, problems: list[Problem], strategy: Strategy) -> None:
        assert self.checkpoint_path is not None
        tmp = self.checkpoint_path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(json.dumps({"strategy": strategy.name, "config": strategy.config()}) + "\n")
            for p in problems:
                fh.write(json.dumps({"task_id": p.task.id, "graph": p.graph.to_dict()}) + "\n")
        os.replace(tmp, self.checkpoint_path)

    def _load_checkpoint(self, strategy: Strategy) -> dict[str, ReasoningGraph]:
        if not self.checkpoint_path or not self.checkpoint_path.exists():
            return {}
        with self.checkpoint_path.open() as fh:
            header = json.loads(fh.readline())
            if header.get("strategy") != strategy.name:
                raise ValueError(
                    f"checkpoint {self.checkpoint_path} was written by strategy {header.get('strategy')!r}, "
                    f"not {strategy.name!r}; fix: use the same strategy or delete the checkpoint"
                )
            graphs = {}
            for line in fh:
                record = json.loads(line)
                graph = ReasoningGraph.from_dict(record["graph"])
                if not graph.meta.get("done"):
                    graphs[record["task_id"]] = graph
            return graphs


def _shares(total: int, owners: list[int]) -> dict[int, int]:
    """``total`` split over ``owners`` (one entry per item) by their item counts, summing to ``total`` exactly."""
    counts: dict[int, int] = {}
    for owner in owners:
        counts[owner] = counts.get(owner, 0) + 1
    shares = {owner: total * n // len(owners) for owner, n in counts.items()}
    first = next(iter(shares))
    shares[first] += total - sum(shares.values())
    return shares
