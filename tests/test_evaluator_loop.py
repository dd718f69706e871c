"""The blueprint's loop from the command line: search traces → training data → a trained evaluator →
a search guided by it, in-process and through `x1 serve value`; and the run settings around it
(evaluator specs, parameter checks before any model loads, YAML-only runs, oracle runs)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from helpers import trace_record
from typer.testing import CliRunner

from x1.cli import app
from x1.config import ConfigError
from x1.evaluators.spec import oracle_reason, parse_evaluator, specs_in
from x1.strategies import build_strategy

runner = CliRunner()


def head_folder(root: Path, kind: str) -> Path:
    """A folder that looks like a trained evaluator of ``kind`` to the spec check (no weights: nothing loads it)."""
    folder = root / f"{kind}-model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x1_head.json").write_text(json.dumps({"kind": kind, "hidden_size": 8}))
    return folder


# -- evaluator specs ----------------------------------------------------------------------------------
def test_every_evaluator_form_parses_and_the_oracle_is_marked(tmp_path: Path) -> None:
    for name in ("confidence", "judge"):
        assert parse_evaluator(name).kind == name and not parse_evaluator(name).oracle
    assert parse_evaluator("verifier").oracle
    for kind in ("value", "prm", "orm"):
        folder = head_folder(tmp_path, kind)
        spec = parse_evaluator(f"{kind}:{folder}")
        assert (spec.kind, spec.target) == (kind, str(folder))
    prm = parse_evaluator(f"prm:{head_folder(tmp_path, 'prm')}?aggregate=last")
    assert dict(prm.options) == {"aggregate": "last"}
    assert parse_evaluator("remote:http://127.0.0.1:8001").target == "http://127.0.0.1:8001"
    assert parse_evaluator("value", value_url="http://h:1").text == "remote:http://h:1"
    assert oracle_reason({"evaluator": "verifier"}) == "evaluator verifier reads the gold answer"
    assert "training=true" in (oracle_reason({"training": True, "evaluator": "confidence"}) or "")
    assert oracle_reason({"evaluator": "confidence"}) is None
    ops = {"ops": [{"op": "score", "evaluator": "judge"}, {"op": "keep_best", "k": 1}], "evaluator": "confidence"}
    assert sorted(specs_in(ops)) == ["confidence", "judge"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nosuch", "unknown evaluator 'nosuch'; valid: confidence, verifier (oracle), judge, value:PATH"),
        ("value", "evaluator 'value' needs a model: value:PATH"),
        ("value:/no/such/dir", "/no/such/dir is not a folder; fix: train one with `x1 fit value"),
        ("remote:127.0.0.1:8001", "the URL needs a scheme"),
    ],
)
def test_bad_evaluator_specs_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_evaluator(text)
    assert "\n" not in str(err.value)


def test_a_folder_of_another_kind_and_a_bad_aggregate_are_refused(tmp_path: Path) -> None:
    value = head_folder(tmp_path, "value")
    with pytest.raises(ConfigError, match=f"holds a trained 'value' model, not 'orm'; fix: write value:{value}"):
        parse_evaluator(f"orm:{value}")
    with pytest.raises(ConfigError, match="aggregate='median' is not one of min, last, product, mean"):
        parse_evaluator(f"prm:{head_folder(tmp_path, 'prm')}?aggregate=median")
    with pytest.raises(ConfigError, match="holds no x1_head.json"):
        parse_evaluator(f"value:{tmp_path}")
    with pytest.raises(ConfigError, match="dtype='half' is not one of float32, bfloat16, float16"):
        parse_evaluator(f"value:{value}?dtype=half")
    with pytest.raises(ConfigError, match="unknown option 'aggregate'; value: takes cache_mb, dtype"):
        parse_evaluator(f"value:{value}?aggregate=min")
    for bad in ("-1", "1.5", "lots", ""):
        with pytest.raises(ConfigError, match=f"cache_mb='{bad}' is not a whole number of megabytes; fix: e.g. cache_mb=512"):
            parse_evaluator(f"value:{value}?cache_mb={bad}")
    both = parse_evaluator(f"prm:{head_folder(tmp_path, 'prm')}?aggregate=last&dtype=bfloat16")
    assert dict(both.options) == {"aggregate": "last", "dtype": "bfloat16"}


def test_specs_that_score_alike_share_a_scoring_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written differently, scoring the same: a re-vote's scores may stand in for the AUC's (scale_auc)."""
    folder = head_folder(tmp_path, "prm")
    monkeypatch.chdir(tmp_path)
    key = parse_evaluator(f"prm:{folder}").scoring_key()
    assert parse_evaluator("prm:./prm-model?aggregate=min").scoring_key() == key
    assert parse_evaluator(f"prm:{folder}?aggregate=last").scoring_key() != key
    assert parse_evaluator(f"prm:{folder}?dtype=bfloat16").scoring_key() != key
    assert parse_evaluator(f"prm:{folder}?cache_mb=0&aggregate=min").scoring_key() == key  # what it keeps changes no score
    assert parse_evaluator(f"value:{head_folder(tmp_path, 'value')}").scoring_key() != key
    # the step scores are the same under any aggregation: the step key leaves it out
    steps = parse_evaluator(f"prm:{folder}").step_key()
    assert steps is not None and parse_evaluator("prm:./prm-model?aggregate=last").step_key() == steps
    assert parse_evaluator(f"prm:{folder}?dtype=bfloat16").step_key() != steps
    assert parse_evaluator(f"value:{head_folder(tmp_path, 'value')}").step_key() is None


# -- strategy parameters ----------------------------------------------------------------------------
def test_parameters_are_typed_from_the_strategy_fields() -> None:
    mcts = build_strategy("mcts", temperature="1e-3", iterations="5", training="true")
    assert mcts.temperature == pytest.approx(0.001) and isinstance(mcts.temperature, float)  # type: ignore[attr-defined]
    assert mcts.iterations == 5 and mcts.training is True  # type: ignore[attr-defined]


# -- the CLI's bad-input table: each one line, exit 2, and no model is loaded ---------------------------
BAD_INPUTS = [
    (["-p", "iterations=abc"], "strategy 'mcts': iterations='abc' is not a valid int"),
    (["-p", "iterations=-3"], "strategy 'mcts': iterations=-3 is out of range; it must be at least 1"),
    (["-p", "iterations=2.5"], "iterations=2.5 is not a valid int"),
    (["-p", "answer_by=foo"], "answer_by='foo' is not one of value, visits"),
    (["-p", "puct_form=alphago"], "puct_form='alphago' is not one of muzero, paper"),
    (["-p", "gamma=1.5"], "gamma=1.5 is out of range; it must be between 0 and 1"),
    (["-p", "training=maybe"], "training='maybe' is not a valid bool"),
    (["-p", "nosuch=1"], "strategy 'mcts' has no parameter(s) ['nosuch']; it takes:"),
    (["-p", "iterations"], "--param 'iterations' must look like key=value"),
    (["-s", "best_of_n", "-p", "voting=foo"], "strategy 'best_of_n': voting='foo' is not one of majority, weighted, reward"),
    (["-s", "alphazero"], "unknown strategy 'alphazero'; choose one of: cot, best_of_n"),
    (["-p", "evaluator=nosuch"], "unknown evaluator 'nosuch'; valid: confidence"),
    (["-p", "evaluator=value"], "evaluator 'value' needs a model: value:PATH"),
    (["-p", "evaluator=value:/no/such/dir"], "evaluator 'value:/no/such/dir': /no/such/dir is not a folder"),
    (["-p", "evaluator=remote:localhost:8001"], "the URL needs a scheme"),
    (["--step", "sentence"], "--step 'sentence' is not one of newline, blank, eois, token, solution"),
    (["--max-step-tokens", "0"], "Invalid value for '--max-step-tokens'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_inputs_fail_in_one_line_before_any_model_loads(args: list[str], message: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import x1.pipelines.evaluate as evaluate
    import x1.pipelines.solve as solve

    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded before the input was checked")

    for module in (solve, evaluate):  # evaluate holds its own name for open_policy
        monkeypatch.setattr(module, "open_policy", no_model)
    result = runner.invoke(app, ["eval", "--task", "samples", "--n", "1", "--model", "fake", "-s", "mcts", *args,
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "run").exists()


# -- configuration ------------------------------------------------------------------------------------
def test_a_yaml_only_run_records_the_yamls_model_strategy_and_seed(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  name: fake\nsearch:\n  strategy: best_of_n\n  seed: 7\n  temperature: 0.3\n  params:\n    n: 2\n")
    result = runner.invoke(app, ["eval", "--task", "samples", "--n", "2", "--config", str(config), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    record = trace_record((tmp_path / "a" / "traces.jsonl").read_text().splitlines()[0])
    assert (record["model"], record["strategy"], record["seed"]) == ("fake", "best_of_n", 7)
    assert record["strategy_config"]["n"] == 2
    saved = json.loads((tmp_path / "a" / "results.json").read_text())["config"]
    assert saved["search"]["temperature"] == 0.3
    # a flag given wins over the YAML; a flag not given leaves it alone
    result = runner.invoke(app, ["eval", "--task", "samples", "--n", "1", "--config", str(config), "--seed", "3",
                                 "--out", str(tmp_path / "b")])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = trace_record((tmp_path / "b" / "traces.jsonl").read_text().splitlines()[0])
    assert (record["strategy"], record["seed"]) == ("best_of_n", 3)


def test_an_oracle_run_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "--task", "samples", "--n", "2", "--model", "fake", "-s", "mcts", "-p", "iterations=2",
                                 "-p", "evaluator=verifier", "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "oracle run" in result.output and "verifier reads the gold answer" in " ".join(result.output.split())
    assert "verifier" in json.loads((tmp_path / "o" / "results.json").read_text())["oracle"]
    assert "verifier" in trace_record((tmp_path / "o" / "traces.jsonl").read_text().splitlines()[0])["oracle"]
    result = runner.invoke(app, ["eval", "--task", "samples", "--n", "1", "--model", "fake", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0 and "oracle run" not in result.output
    assert json.loads((tmp_path / "c" / "results.json").read_text())["oracle"] is None


def test_step_granularity_from_the_cli(tmp_path: Path) -> None:
    for step, check in (("token", lambda texts: all(len(t.split()) <= 1 for t in texts)),
                        ("solution", lambda texts: len(texts) == 1)):  # fmt: skip
        out = tmp_path / step
        result = runner.invoke(app, ["eval", "--task", "samples", "--n", "1", "--model", "fake", "-s", "cot", "--step", step,
                                     "--out", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        graph = trace_record((out / "traces.jsonl").read_text().splitlines()[0])["graph"]
        texts = [t["text"] for t in graph["thoughts"] if t["id"] != 0]
        assert texts and check(texts), (step, texts)


# -- the loop, with trained models ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("torch")
    for name in ("transformers", "trl", "peft", "datasets", "fastapi", "uvicorn", "httpx"):
        pytest.importorskip(name)
    from helpers import one_torch_thread, save_tiny_llama

    with one_torch_thread():
        yield save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"x1 {' '.join(args)}\n{result.output}"
    return result.output


def scores_of(run: Path) -> list[dict[str, float]]:
    return [t["scores"] for line in (run / "traces.jsonl").read_text().splitlines() for t in trace_record(line)["graph"]["thoughts"]]


@pytest.mark.parametrize("kind", ["value", "prm", "orm"])
def test_the_loop_closes_from_the_cli(kind: str, tiny: str, tmp_path: Path) -> None:
    """x1 eval (traces) → x1 data → x1 fit KIND → x1 eval -p evaluator=KIND:DIR; the scores come from the trained head,
    differ from confidence, and equal what `x1 serve value` answers for the same model."""
    from x1.serve.common import BackgroundServer
    from x1.serve.run import load_value_scorer
    from x1.serve.value import create_value_app

    search = tmp_path / "search"
    cli("eval", "--task", "samples", "--n", "4", "--model", "fake", "-s", "mcts", "-p", "iterations=6", "-p", "training=true",
        "-p", "rollouts=1", "--out", str(search))  # fmt: skip
    traces = str(search / "traces.jsonl")
    model = tmp_path / f"{kind}-model"
    fit = ["--model", tiny, "--out", str(model), "--max-steps", "2", "--batch-size", "2", "--device", "cpu"]
    if kind == "value":
        cli("data", "values", "--traces", traces, "--out", str(tmp_path / "values.jsonl"))
        cli("fit", "value", "--data", str(tmp_path / "values.jsonl"), *fit)
    elif kind == "prm":
        cli("data", "process", "--traces", traces, "--out", str(tmp_path / "process.jsonl"))
        cli("fit", "prm", "--data", str(tmp_path / "process.jsonl"), *fit)
    else:
        cli("data", "pairs", "--traces", traces, "--out", str(tmp_path / "pairs.jsonl"))
        cli("fit", "orm", "--data", str(tmp_path / "pairs.jsonl"), *fit)
    spec = f"{kind}:{model}"
    common = ["--task", "samples", "--n", "2", "--model", "fake", "-s", "beam", "-p", "width=2", "-p", "branch=2", "-p", "max_depth=3"]
    guided, confident = tmp_path / "guided", tmp_path / "confident"
    shown = cli("eval", *common, "-p", f"evaluator={spec}", "--out", str(guided))
    cli("eval", *common, "--out", str(confident))
    trained = [s[spec] for s in scores_of(guided) if spec in s]
    baseline = [s["confidence"] for s in scores_of(confident) if "confidence" in s]
    assert trained and all(0.0 <= v <= 1.0 for v in trained)
    assert trained != baseline[: len(trained)]
    # the trained evaluator's compute is charged to the problems it scored, apart from the policy's tokens
    charged = [trace_record(line)["compute"]["evaluator_tokens"] for line in (guided / "traces.jsonl").read_text().splitlines()]
    assert all(n > 0 for n in charged)
    assert json.loads((guided / "results.json").read_text())["evaluator_tokens"] == sum(charged)
    assert f"trained evaluators ran {sum(charged):,} positions" in shown
    assert json.loads((confident / "results.json").read_text())["evaluator_tokens"] == 0

    with BackgroundServer(create_value_app(load_value_scorer(str(model)))) as server:
        remote = f"remote:{server.url}"
        served = tmp_path / "served"
        cli("eval", *common, "-p", f"evaluator={remote}", "--out", str(served))
    over_http = [s[remote] for s in scores_of(served) if remote in s]
    assert over_http == pytest.approx(trained, abs=1e-5)
    # the server's work is not counted on this side: unknown, not 0
    assert json.loads((served / "results.json").read_text())["evaluator_tokens"] is None


def test_serve_value_loads_a_trained_head_not_the_language_model(tiny: str, tmp_path: Path) -> None:
    from x1.data import ValueTarget, write_jsonl
    from x1.serve.run import load_value_scorer
    from x1.serve.value import BackendScorer, TrainedScorer

    write_jsonl(tmp_path / "v.jsonl", [ValueTarget("Q\n", f"{k}", 1.0 if k % 2 else -1.0, "t") for k in range(4)])
    cli("fit", "value", "--data", str(tmp_path / "v.jsonl"), "--model", tiny, "--out", str(tmp_path / "v"), "--max-steps", "1",
        "--device", "cpu")  # fmt: skip
    for name in (str(tmp_path / "v"), f"value:{tmp_path / 'v'}"):
        scorer = load_value_scorer(name)
        assert isinstance(scorer, TrainedScorer) and scorer.kind == "value"
        assert not isinstance(scorer, BackendScorer)


def test_bradley_terry_loss_by_hand() -> None:
    """L = mean(−log σ(r⁺ − r⁻)): rewards (1, 3) for the chosen and (0, 1) for the rejected give
    (log(1 + e^−1) + log(1 + e^−2)) / 2 = (0.3132617 + 0.1269280) / 2."""
    torch = pytest.importorskip("torch")
    from x1.training.value import orm_loss

    class Fixed:
        def pad(self, seqs: list[list[int]]) -> tuple[object, object]:
            assert seqs == [[1], [2], [3], [4]]  # chosen first, then rejected, pair by pair
            return torch.zeros(4, 1), torch.ones(4, 1)

        def last_logits(self, ids: object, mask: object) -> object:
            return torch.tensor([1.0, 3.0, 0.0, 1.0])

    assert float(orm_loss(Fixed(), [([1], [3]), ([2], [4])])) == pytest.approx(0.2200948, abs=1e-6)


def test_bfloat16_on_a_cpu_without_native_bf16_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from x1.models.hf_loading import native_bf16_flags, warn_if_cpu_bf16_is_emulated
    from x1.training.model_io import mixed_precision

    monkeypatch.setenv("X1_CPU_FLAGS", "avx,avx2,avx512f")

    native_bf16_flags.cache_clear()  # the flags are read once per process
    with pytest.warns(UserWarning, match="no native bfloat16.*about 8x slower.*fix: drop dtype=bfloat16"):
        warn_if_cpu_bf16_is_emulated("prm:DIR?dtype=bfloat16", fix="drop dtype=bfloat16")
    with pytest.warns(UserWarning, match="precision bf16: .*fix: use precision fp32"):
        assert mixed_precision("bf16", torch.device("cpu")) == (True, False)
    monkeypatch.setenv("X1_CPU_FLAGS", "avx,avx2,avx512f,avx512_bf16")
    native_bf16_flags.cache_clear()  # the flags are read once per process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_cpu_bf16_is_emulated("prm:DIR?dtype=bfloat16", fix="drop dtype=bfloat16")
        mixed_precision("bf16", torch.device("cpu"))
    monkeypatch.undo()
    native_bf16_flags.cache_clear()  # later tests read this CPU's own flags
