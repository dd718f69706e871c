"""The llama.cpp build choice: probed features, the AMX guard, the keyed wheel cache, the child-process check."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import pytest

from x1.models.base import BackendError
from x1.models.llama_cpp import build
from x1.models.llama_cpp.check import run_in_child

EVERYTHING = {f for g in build.GROUPS for f in g.cpu_flags}


def passing_probe(calls: list[str] | None = None, failing: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    def run(group: build.FeatureGroup, workdir: Path) -> str | None:
        if calls is not None:
            calls.append(group.name)
        return (failing or {}).get(group.name)

    return run


def auto_features() -> list[str]:
    return build.choose_features("auto", EVERYTHING, passing_probe()).features


def test_amx_that_the_cpu_reports_but_cannot_run_is_left_out() -> None:
    named = ",".join([*auto_features(), "amx_int8", "amx_bf16"])
    choice = build.choose_features(named, EVERYTHING, passing_probe(failing={"amx_int8": "probe killed by SIGSEGV"}))
    assert "amx_int8" not in choice.features and "amx_bf16" not in choice.features
    assert {"avx512", "avx512_vnni", "avx2"} <= set(choice.features)
    assert "SIGSEGV" in choice.off["amx_int8"] and choice.off["amx_bf16"] == "needs amx_int8"
    args = build.cmake_args(choice.features)
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args and "-DGGML_AMX_TILE=OFF" in args
    assert "-DGGML_AVX512=ON" in args
    assert "SIGSEGV" in choice.describe()


def test_auto_leaves_amx_out_with_the_reason_and_a_named_list_builds_it() -> None:
    calls: list[str] = []
    auto = build.choose_features("auto", EVERYTHING, passing_probe(calls))
    assert "amx_int8" not in auto.features and "amx_int8" not in calls and "avx512_vnni" in auto.features
    assert "PR #26954" in auto.off["amx_int8"] and "PR #26954" in auto.off["amx_bf16"]
    assert "-DGGML_AMX_TILE=OFF" in build.cmake_args(auto.features)


def test_amx_is_on_only_when_named_and_its_probe_runs() -> None:
    named = ",".join([*auto_features(), "amx_int8", "amx_bf16"])
    choice = build.choose_features(named, EVERYTHING, passing_probe())
    assert choice.features[-2:] == ["amx_int8", "amx_bf16"]
    args = build.cmake_args(choice.features)
    assert "-DGGML_AMX_TILE=ON" in args and "-DGGML_AMX_INT8=ON" in args and "-DGGML_AMX_BF16=ON" in args


def test_groups_the_cpu_does_not_report_are_neither_probed_nor_built() -> None:
    calls: list[str] = []
    choice = build.choose_features("auto", {"sse4_2", "avx", "avx2", "fma"}, passing_probe(calls))
    assert choice.features == ["sse42", "avx", "avx2", "fma"] == calls
    assert "-DGGML_F16C=OFF" in build.cmake_args(choice.features) and "-DGGML_AVX512=OFF" in build.cmake_args(choice.features)


def test_a_failed_probe_switches_off_what_depends_on_it() -> None:
    choice = build.choose_features("auto", EVERYTHING, passing_probe(failing={"avx512": "probe killed by SIGILL"}))
    assert choice.features == ["sse42", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni"]
    assert choice.off["avx512_vnni"] == "needs avx512" and "PR #26954" in choice.off["amx_int8"]


def test_safe_and_baseline_sets_and_explicit_lists() -> None:
    safe = build.choose_features("safe", EVERYTHING, passing_probe())
    assert safe.features == list(build.SAFE_GROUPS)
    assert build.choose_features("baseline", EVERYTHING, passing_probe()).features == []
    assert build.choose_features("baseline").key == "baseline"
    explicit = build.choose_features("avx,avx2", {"avx", "avx2", "avx512f"}, passing_probe())
    assert explicit.features == ["avx", "avx2"]
    with pytest.raises(ValueError, match="unknown CPU feature group.*avx9"):
        build.choose_features("avx9", EVERYTHING, passing_probe())
    assert build._next_rung(["avx2", "avx512", "amx_int8", "amx_bf16"]) == "avx2,avx512"  # AMX goes first
    assert safe.off["avx512"] == "left out by 'safe'" and explicit.off == {}
    assert build.choose_features("sse42,avx", EVERYTHING, passing_probe()).off["avx2"] == "not named"
    assert build._next_rung(["avx2", "avx512"]) == "safe"
    assert build._next_rung(["avx2"]) == "baseline"
    assert build._next_rung([]) is None


def test_the_override_variable_stands_in_for_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X1_CPU_FLAGS", "avx, avx2 amx_tile,amx_int8")
    assert build.reported_cpu_flags() == {"avx", "avx2", "amx_tile", "amx_int8"}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or build._compiler() is None, reason="needs x86-64 and a C compiler")
def test_real_probes_reject_what_this_cpu_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim every group; the probes run for real, so what the CPU lacks must fail (SIGILL), not be built."""
    real = build.reported_cpu_flags()
    monkeypatch.setenv("X1_CPU_FLAGS", ",".join(EVERYTHING))
    choice = build.choose_features("auto")
    assert "sse42" in choice.features  # every x86-64 machine of this decade
    for group in build.GROUPS:
        if not set(group.cpu_flags) <= real:
            assert group.name not in choice.features, (group.name, choice.off.get(group.name))
    faulted = [why for why in choice.off.values() if "reported but unusable" in why]
    assert faulted or real >= EVERYTHING


def test_a_cached_wheel_is_reused_and_a_new_set_is_built_with_its_own_args(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X1_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "build_record_path", lambda: tmp_path / "venv" / "llama_cpp_build.json")
    monkeypatch.setattr(build, "_installed_version", lambda: None)
    calls: list[tuple[tuple[str, ...], str | None]] = []

    def fake_pip(*args: str, env: dict[str, str] | None = None) -> None:
        calls.append((args, (env or {}).get("CMAKE_ARGS")))
        if args[0] == "wheel":
            out = Path(args[args.index("-w") + 1])
            out.mkdir(parents=True)
            (out / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").write_text("wheel")

    monkeypatch.setattr(build, "_pip", fake_pip)
    choice = build.Choice(["sse42", "avx", "avx2"], {})
    build.install(choice, log=lambda _: None)
    wheel_calls = [c for c in calls if c[0][0] == "wheel"]
    assert len(wheel_calls) == 1 and "--no-cache-dir" in wheel_calls[0][0]
    assert wheel_calls[0][1] == build.cmake_args(["sse42", "avx", "avx2"])
    record = json.loads((tmp_path / "venv" / "llama_cpp_build.json").read_text())
    assert record["features"] == ["sse42", "avx", "avx2"]

    calls.clear()
    build.install(choice, log=lambda _: None)  # a second setup: no compile
    assert [c[0][0] for c in calls] == ["install", "install"]

    calls.clear()
    build.install(build.Choice(["sse42"], {}), log=lambda _: None)  # another set never takes that wheel
    assert [c[0][0] for c in calls][0] == "wheel"
    assert build.wheel_dir(choice) != build.wheel_dir(build.Choice(["sse42"], {}))


def test_a_build_for_features_this_cpu_lacks_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    record = tmp_path / "llama_cpp_build.json"
    record.write_text(json.dumps({"features": ["avx2", "avx512", "amx_int8"]}))
    monkeypatch.setattr(build, "build_record_path", lambda: record)
    assert build.unsupported_build_features({"avx", "avx2"} | {"avx512f"}) == ["avx512", "amx_int8"]
    assert build.unsupported_build_features(EVERYTHING) == []


def test_the_backend_refuses_a_build_this_cpu_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    from x1.models.llama_cpp import backend as llamacpp
    from x1.models.registry import smollm2_path

    monkeypatch.setattr(llamacpp, "unsupported_build_features", lambda: ["amx_int8"])
    with pytest.raises(BackendError, match=r"built with amx_int8.*fix: rm -rf .venv && scripts/setup.sh"):
        llamacpp.LlamaCppBackend(smollm2_path(), n_ctx=256, n_seq_max=1)


def test_a_crash_in_the_child_becomes_a_backend_error_naming_the_signal() -> None:
    with pytest.raises(BackendError, match=r"crashed \(SIGSEGV\).*fix: X1_LLAMA_FEATURES=safe scripts/setup.sh"):
        run_in_child("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", what="a test decode")
    with pytest.raises(BackendError, match=r"crashed \(SIGILL\)"):
        run_in_child("import os, signal\nos.kill(os.getpid(), signal.SIGILL)", what="a test decode")
    with pytest.raises(BackendError, match="exit 3.*boom"):
        run_in_child("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)", what="a test decode")
    assert run_in_child("print('fine')", what="a test decode").strip() == "fine"


def test_install_refuses_an_unknown_group_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["install", "--features", "avx9"]) == 2
    assert "unknown CPU feature group" in capsys.readouterr().err


@pytest.mark.model
def test_self_check_decodes_the_bundled_model_in_a_child() -> None:
    pytest.importorskip("llama_cpp")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no compiler")
    from x1.models.llama_cpp.check import self_check

    line = self_check("smollm2", tokens=4)
    assert line.startswith("llama.cpp self-check ok: smollm2 decoded")


def test_check_fallback_drops_amx_first_then_the_rest(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from x1.models.llama_cpp import check

    without_amx = auto_features()
    record = {"features": [*without_amx, "amx_int8", "amx_bf16"]}
    installed: list[list[str]] = []
    crashes = iter([True, True, False])

    def fake_self_check() -> str:
        if next(crashes):
            raise BackendError("llama.cpp crashed (SIGILL) in a child process")
        return "llama.cpp self-check ok"

    def fake_install(choice: build.Choice, **_: object) -> None:
        installed.append(choice.features)
        record["features"] = choice.features

    real_choose = build.choose_features
    monkeypatch.setattr(check, "self_check", fake_self_check)
    monkeypatch.setattr(build, "read_build_record", lambda: record)
    monkeypatch.setattr(build, "install", fake_install)
    monkeypatch.setattr(build, "choose_features", lambda mode: real_choose(mode, EVERYTHING, passing_probe()))
    assert build.main(["check", "--fallback"]) == 0
    assert installed == [without_amx, list(build.SAFE_GROUPS)]
    assert "avx512" in installed[0] and "amx_int8" not in installed[0]
    assert capsys.readouterr().out.count("self-check FAILED") == 2
