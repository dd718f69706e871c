"""The ecosystem's formats: traces of every strategy load together in `datasets`, `x1 data` writes the rows
TRL's trainers read (and they train a step on them), `x1 fit` reads TRL-shaped files, and a data command with
nothing trustworthy to write refuses rather than writing junk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_torch_thread, save_tiny_llama
from test_data_extract import as_record, mcts_graph
from typer.testing import CliRunner

from x1.cli import app
from x1.data import EOIS, ProcessLabel, SFTExample
from x1.data.formats import FormatError, load_rows, records_of
from x1.graph import ReasoningGraph
from x1.trace import TRACE_VERSION, TraceError, read_traces, write_record

runner = CliRunner()


def words(output: str) -> str:
    return " ".join(output.split())  # rich wraps lines


def write_traces(path: Path, records: list[dict]) -> Path:
    with path.open("w") as fh:
        for record in records:
            write_record(fh, {k: v for k, v in record.items() if k != "trace_version"})
    return path


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    """A training-mode MCTS trace (verifier rewards on the terminals), in the current trace version."""
    return write_traces(tmp_path / "traces.jsonl", [as_record(mcts_graph(), answer_thought=3, score=1.0)])


# -- one trace schema ------------------------------------------------------------------------------
def test_traces_of_every_strategy_load_together_in_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    files = []
    for strategy in ("cot", "best_of_n", "beam", "mcts"):
        out = tmp_path / strategy
        result = runner.invoke(app, ["eval", "-t", "samples", "--n", "2", "-m", "fake", "-s", strategy, "--out", str(out)])
        assert result.exit_code == 0, result.output
        files.append(str(out / "traces.jsonl"))
    loaded = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 8 and sorted(set(loaded["strategy"])) == ["beam", "best_of_n", "cot", "mcts"]
    assert all(v == TRACE_VERSION for v in loaded["trace_version"])
    # readers get the graph and the strategy's parameters back as objects
    records = [r for f in files for r in read_traces(f)]
    assert all(isinstance(r["strategy_config"], dict) and ReasoningGraph.from_dict(r["graph"]) for r in records)
    assert {r["strategy_config"]["name"] for r in records} == {"cot", "best_of_n", "beam", "mcts"}


def test_missing_values_read_back_as_none_and_version_1_still_reads(tmp_path: Path) -> None:
    record = as_record(mcts_graph(), answer_thought=None, score=0.0, answer=None)
    record["gold"] = None
    path = write_traces(tmp_path / "v2.jsonl", [record])
    on_disk = json.loads(path.read_text())
    assert on_disk["answer"] == "" and on_disk["answer_thought"] == -1 and isinstance(on_disk["graph"], str)
    back = next(read_traces(path))
    assert back["answer"] is None and back["answer_thought"] is None and back["gold"] is None and "level" not in back
    old = tmp_path / "v1.jsonl"
    old.write_text(json.dumps({**record, "trace_version": 1}) + "\n")
    assert next(read_traces(old))["graph"] == record["graph"]
    future = tmp_path / "v9.jsonl"
    future.write_text(json.dumps({**record, "trace_version": 9}) + "\n")
    with pytest.raises(TraceError, match=r"v9.jsonl:1: trace version 9, this x1 reads versions 1, 2"):
        next(read_traces(future))


# -- x1 data writes TRL's shapes ---------------------------------------------------------------------
def data(command: str, traces: Path, out: Path, *args: str) -> str:
    result = runner.invoke(app, ["data", command, "--traces", str(traces), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_data_writes_trl_rows_by_default_and_x1_rows_on_request(traces: Path, tmp_path: Path) -> None:
    data("sft", traces, tmp_path / "sft.jsonl")
    (sft,) = rows(tmp_path / "sft.jsonl")
    assert set(sft) == {"prompt", "completion"} and sft["prompt"][-1]["role"] == "user"
    assert sft["completion"] == [{"role": "assistant", "content": "Step A\n\nThe answer is: 2"}]  # no literal <eois>
    data("pairs", traces, tmp_path / "pairs.jsonl")
    pairs = rows(tmp_path / "pairs.jsonl")
    assert all(set(r) == {"prompt", "chosen", "rejected", "chosen_final", "rejected_final"} for r in pairs)
    assert {r["chosen_final"] for r in pairs} == {True, False}  # step pairs of intermediate steps are marked
    assert records_of(pairs, "PreferencePair", "f")[0]["chosen_final"] == pairs[0]["chosen_final"]
    data("process", traces, tmp_path / "process.jsonl")
    process = rows(tmp_path / "process.jsonl")
    assert all(set(r) == {"prompt", "completions", "labels"} and len(r["completions"]) == len(r["labels"]) for r in process)
    assert {tuple(r["labels"]) for r in process} == {(True, True), (True, True, True), (True, True, False)}  # C: 1 of 2 right
    data("sft", traces, tmp_path / "x1.jsonl", "--format", "x1")
    (x1,) = rows(tmp_path / "x1.jsonl")
    assert x1["completion"] == f"Step A{EOIS}The answer is: 2" and x1["source"] == "answer_path"
    result = runner.invoke(app, ["data", "sft", "--traces", str(traces), "--out", str(tmp_path / "e.jsonl"), "--step-format"])
    assert result.exit_code == 2 and "--format x1" in words(result.output) and not (tmp_path / "e.jsonl").exists()


def test_nothing_to_write_is_refused_and_no_file_is_written(traces: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    result = runner.invoke(app, ["data", "sft", "--traces", str(traces), "--out", str(out), "--min-score", "2"])
    assert result.exit_code == 2 and "nothing to write" in words(result.output) and not out.exists()


def test_pairs_of_unverified_traces_need_an_evaluator_or_allow_unverified(tmp_path: Path) -> None:
    graph = mcts_graph()
    for t in graph:
        t.reward = None  # not training mode: steps are ranked by the search's own values only
    record = as_record(graph, answer_thought=3, score=1.0)
    plain = write_traces(tmp_path / "plain.jsonl", [{**record, "strategy_config": {"name": "mcts", "evaluator": "confidence"}}])
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["data", "pairs", "--traces", str(plain), "--out", str(out)])
    assert result.exit_code == 2 and "--allow-unverified" in words(result.output) and not out.exists()
    assert "wrote" in data("pairs", plain, out, "--allow-unverified") and out.exists()
    scored = write_traces(tmp_path / "scored.jsonl", [{**record, "strategy_config": {"name": "mcts", "evaluator": "prm:runs/prm"}}])
    assert "wrote" in data("pairs", scored, tmp_path / "scored-pairs.jsonl")


# -- x1 fit reads TRL's shapes, Parquet and datasets folders ------------------------------------------
def test_fit_readers_take_trl_rows_parquet_and_datasets_folders(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    chat = [{"prompt": [{"role": "user", "content": "1+1?"}], "completion": [{"role": "assistant", "content": "2"}]}]
    assert records_of(chat, "SFTExample", "f") == chat
    text = [{"prompt": "1+1=", "completion": "2"}]
    assert records_of(text, "SFTExample", "f") == text
    assert records_of([{"messages": chat[0]["prompt"] + chat[0]["completion"]}], "SFTExample", "f")[0]["messages"][1]["content"] == "2"
    stepwise = [{"prompt": "Q", "completions": ["a", "b"], "labels": [True, False]}]
    assert records_of(stepwise, "ProcessLabel", "f") == [ProcessLabel("Q", ["a", "b"], [1.0, 0.0], "")]
    x1_rows = [SFTExample([{"role": "user", "content": "q"}], "a", "t", "answer_path").to_dict()]
    assert records_of(x1_rows, "SFTExample", "f") == [SFTExample(**x1_rows[0])]
    with pytest.raises(FormatError, match="f:2: mixes text and conversational"):
        records_of(chat + text, "SFTExample", "f")
    with pytest.raises(FormatError, match="labels' should hold one label per step"):
        records_of([{"prompt": "Q", "completions": ["a"], "labels": [True, True]}], "ProcessLabel", "f")
    ds = datasets.Dataset.from_list(stepwise * 3)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_rows(tmp_path / "p.parquet") == stepwise * 3 == load_rows(tmp_path / "saved")


def test_fit_names_what_a_trl_file_of_another_kind_is(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "completions": ["a"], "labels": [True]}) + "\n")
    result = runner.invoke(app, ["fit", "sft", "--data", str(path), "--model", "smollm2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{path}:1: a ProcessLabel" in words(result.output) and "x1 fit prm" in words(result.output)


# -- TRL trains on what x1 data writes ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    for name in ("torch", "transformers", "trl", "datasets"):
        pytest.importorskip(name)
    with one_torch_thread():
        yield save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def one_step(trainer_cls, config_cls, model: str, path: Path, out: Path, **extra) -> float:  # type: ignore[no-untyped-def]
    """One optimiser step of a TRL trainer on a JSONL file, exactly as a TRL user loads it; the logged loss."""
    import datasets
    from transformers import AutoTokenizer

    train = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(out / "cache"))
    args = config_cls(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, report_to="none", save_strategy="no",
                      logging_steps=1, use_cpu=True, dataset_num_proc=None, disable_tqdm=True, **extra)
    trainer = trainer_cls(model=model, args=args, train_dataset=train, processing_class=AutoTokenizer.from_pretrained(model))
    trainer.train()
    (loss,) = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return float(loss)


def test_trl_sft_and_dpo_train_a_step_on_x1_data_files(tiny: str, traces: Path, tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    data("sft", traces, tmp_path / "sft.jsonl", "--all-correct-paths")
    data("pairs", traces, tmp_path / "pairs.jsonl")
    assert one_step(SFTTrainer, SFTConfig, tiny, tmp_path / "sft.jsonl", tmp_path / "sft") > 0
    assert one_step(DPOTrainer, DPOConfig, tiny, tmp_path / "pairs.jsonl", tmp_path / "dpo") > 0


def test_x1_fit_trains_the_prm_and_sft_on_trl_shaped_files(tiny: str, traces: Path, tmp_path: Path) -> None:
    data("process", traces, tmp_path / "process.jsonl")
    result = runner.invoke(app, ["fit", "prm", "--data", str(tmp_path / "process.jsonl"), "--model", tiny, "--out",
                                 str(tmp_path / "prm"), "--max-steps", "1", "--batch-size", "2", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prm").is_dir() and "prm" in result.output
    sft = tmp_path / "trl-sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"{a}+{a}?"}],
                                       "completion": [{"role": "assistant", "content": str(2 * a)}]}) + "\n" for a in range(4)))
    result = runner.invoke(app, ["fit", "sft", "--data", str(sft), "--model", tiny, "--out", str(tmp_path / "sft"),
                                 "--max-steps", "1", "--batch-size", "2", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sft" / "config.json").exists()
