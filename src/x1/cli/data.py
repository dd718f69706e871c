"""`x1 data`: training data from traces (SFT examples, preference pairs, process labels, value targets, journeys)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from x1.cli.root import console, fail

data_app = typer.Typer(no_args_is_help=True, help="Training data from traces: SFT, preference pairs, process labels, value targets.")

TracesOpt = Annotated[list[Path], typer.Option("--traces", help="trace file(s) (JSONL) written by x1 solve / x1 eval; repeatable")]
DataOutOpt = Annotated[Path, typer.Option("--out", help="where to write the records (JSONL)")]
FormatOpt = Annotated[str, typer.Option(
    "--format", help="trl: the rows TRL's trainers and datasets read (x1 fit reads them too); x1: x1's richer rows (q values, task ids)")]
StepFormatOpt = Annotated[bool | None, typer.Option(
    "--step-format/--raw-steps", help="x1 format: join steps with the <eois> marker (x1 fit adds it as a token); "
    "trl format keeps the policy's own step text [default: step format for x1, raw for trl]")]
MinScoreOpt = Annotated[float, typer.Option(help="keep records whose verdict reaches this score")]


def _check_format(fmt: str, step_format: bool | None) -> bool:
    """The step format to extract with: x1 rows default to <eois>; TRL rows never carry the literal marker."""
    from x1.data.formats import FORMATS

    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "trl" and step_format:
        fail("--step-format writes the <eois> marker, which a stock tokenizer splits into pieces, so TRL rows keep the policy's "
             "own step text; fix: drop --step-format, or use --format x1 (x1 fit sft --config with eois_token: true adds the token)")
    return fmt == "x1" if step_format is None else step_format


def _write_data(traces: list[Path], out: Path, what: str, extract: Callable[[list[dict[str, Any]]], Iterable[Any]],
                fmt: str = "x1", check: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """Read every trace, extract, write; one-line errors; refuse (and write nothing) when nothing qualifies."""
    from x1.data import load_records, write_jsonl
    from x1.data.formats import NOTHING_WRITTEN, FormatError, to_trl
    from x1.trace import TraceError

    try:
        records = load_records(traces)
        if check is not None:
            check(records)
        items = list(extract(records))
        if not items:
            fail(f"nothing to write: {len(records)} trace records give no {what} ({NOTHING_WRITTEN[what]}); no file was written")
        n = write_jsonl(out, to_trl(items) if fmt == "trl" else items)
    except (TraceError, FormatError, ValueError, KeyError) as err:
        fail(str(err) if not isinstance(err, KeyError) else f"a trace record lacks the field {err}; is it an x1 trace?")
    console.print(f"wrote {n} {what} ({fmt} rows) from {len(records)} trace records to {out}")


@data_app.command("sft")
def data_sft(
    traces: TracesOpt,
    out: DataOutOpt,
    min_score: MinScoreOpt = 1.0,
    all_correct_paths: Annotated[bool, typer.Option(help="also every other correct terminal path in the graphs")] = False,
    step_format: StepFormatOpt = None,
    fmt: FormatOpt = "trl",
) -> None:
    """Rejection sampling: verified-correct paths as SFT examples (TRL prompt/completion messages by default)."""
    from x1.data import sft_examples

    steps = _check_format(fmt, step_format)
    _write_data(traces, out, "SFT examples", lambda r: sft_examples(r, min_score, all_correct_paths, steps), fmt)


@data_app.command("pairs")
def data_pairs(
    traces: TracesOpt,
    out: DataOutOpt,
    min_gap: Annotated[float, typer.Option(help="smallest q difference between chosen and rejected")] = 0.2,
    outcome: Annotated[bool, typer.Option(help="also correct-vs-incorrect whole solutions of a task")] = True,
    step: Annotated[bool, typer.Option(help="sibling steps ranked by q (needs verified or evaluator-scored traces)")] = True,
    max_per_parent: Annotated[int | None, typer.Option(help="at most this many step pairs per parent")] = None,
    allow_unverified: Annotated[bool, typer.Option(
        help="rank steps of traces run without -p training=true and without an evaluator by the policy's own confidence")] = False,
    fmt: FormatOpt = "trl",
) -> None:
    """Preference pairs (DPO): sibling steps by q, and correct vs incorrect solutions (TRL prompt/chosen/rejected by default)."""
    from x1.data import preference_pairs
    from x1.data.formats import unverified

    _check_format(fmt, None)

    def check(records: list[dict[str, Any]]) -> None:
        weak = unverified(records) if step and not allow_unverified else []
        if weak and (n := len(preference_pairs(weak, min_gap, outcome=False, max_per_parent=max_per_parent))):
            fail(f"{n} step pairs of {len(weak)} trace records would be ranked by the policy's own confidence (run without "
                 "-p training=true and without an evaluator), so a wrong step can become 'chosen'; fix: re-run with "
                 "-p training=true or -p evaluator=SPEC, or pass --no-step (outcome pairs only) or --allow-unverified")

    _write_data(traces, out, "preference pairs", lambda r: preference_pairs(r, min_gap, outcome, max_per_parent, step=step), fmt, check)


@data_app.command("process")
def data_process(
    traces: TracesOpt,
    out: DataOutOpt,
    hard: Annotated[bool, typer.Option(help="1 if any rollout below a step is correct (else the fraction)")] = False,
    fmt: FormatOpt = "trl",
) -> None:
    """Monte-Carlo process labels for a process reward model (TRL stepwise supervision by default: a label is true at >= 0.5)."""
    from x1.data import process_labels

    _check_format(fmt, None)
    _write_data(traces, out, "labelled paths", lambda r: process_labels(r, hard=hard), fmt)


@data_app.command("values")
def data_values(
    traces: TracesOpt,
    out: DataOutOpt,
    source: Annotated[str, typer.Option(help="mcts (backed-up q) or mc (discounted terminal rewards)")] = "mcts",
    gamma: Annotated[float, typer.Option(help="discount per step for --source mc")] = 0.96,
    min_visits: Annotated[int, typer.Option(help="for --source mcts: skip thoughts visited fewer times")] = 1,
) -> None:
    """Value-model targets in [-1, 1] for every labelled partial solution (x1 rows: TRL has no value-model shape)."""
    from x1.data import value_targets

    if source not in ("mcts", "mc"):
        fail(f"--source {source!r}: choose one of mcts, mc")
    _write_data(traces, out, "value targets", lambda r: value_targets(r, gamma, source, min_visits))  # type: ignore[arg-type]


@data_app.command("journey")
def data_journey(
    traces: TracesOpt,
    out: DataOutOpt,
    min_score: MinScoreOpt = 1.0,
    step_format: StepFormatOpt = None,
    whole_trace: Annotated[bool, typer.Option(help="the whole search graph as text instead of one journey chain")] = False,
    fmt: FormatOpt = "trl",
) -> None:
    """Trace-based SFT: searches flattened with their dead ends and backtracks (journey learning)."""
    from x1.data import journey_chains, trace_samples

    steps = _check_format(fmt, step_format)
    if whole_trace:
        _write_data(traces, out, "trace samples", lambda r: trace_samples(r, min_score), fmt)
    else:
        _write_data(traces, out, "journey chains", lambda r: journey_chains(r, min_score, steps), fmt)
