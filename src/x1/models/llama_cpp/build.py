"""Build llama.cpp for the machine it will run on, proved by running, not by what the CPU reports.

Why by hand: llama-cpp-python compiles with ``-march=native``, which trusts the CPU's flags.
Some sandboxes report AMX or AVX-512 that fault on first use (ggml's AMX matmul segfaults), so
a native build crashes on the first multiply. Here each instruction-set group is turned on only
when the CPU reports it *and* a small program that uses it computes the right answer in a child
process. ``auto`` leaves AMX out even when its probe passes: ggml's own AMX kernels (llama.cpp
0.3.36) die of SIGILL on ``tilezero`` in a worker thread on machines where the same tile
multiply runs fine from C, in any thread, with the permission asked for (measured, see
AUTO_LEFT_OUT). Name the groups to build them anyway; the self-check's fallback drops them first.
The chosen set names a wheel cache (``~/.cache/x1/wheels/<set>``), so a second setup on the
machine installs in seconds, and a wheel built for one set is never reused for another (pip's
own wheel cache keys on the sdist alone, not on ``CMAKE_ARGS``).

    python -m x1.models.llama_cpp.build install [--features auto|safe|baseline|avx2,fma,...]
    python -m x1.models.llama_cpp.build check [--fallback]

``X1_CPU_FLAGS`` (a comma list) stands in for the flags the CPU reports, to test the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
SETUP_COMMAND = "scripts/setup.sh"


@dataclass(frozen=True)
class FeatureGroup:
    """One switch of ggml's CMake build, the CPU flags it needs, and a probe that uses it."""

    name: str
    cpu_flags: tuple[str, ...]  # as /proc/cpuinfo spells them
    cmake: tuple[str, ...]  # GGML_* options turned ON together
    cc_flags: tuple[str, ...]
    requires: tuple[str, ...]  # other groups that must be on
    probe: str  # C statements; the program exits 0 only if they computed the right answer


_AMX_SETUP = r"""
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) return 3;
    struct { unsigned char palette, start_row, reserved[14]; unsigned short colsb[16]; unsigned char rows[16]; }
        __attribute__((packed)) cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 3; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    _tile_loadconfig(&cfg);
"""

GROUPS: tuple[FeatureGroup, ...] = (
    FeatureGroup("sse42", ("sse4_2",), ("GGML_SSE42",), ("-msse4.2",), (),
                 "return _mm_crc32_u32(0, 1u) == 0xdd45aab8u ? 0 : 1;"),
    FeatureGroup("avx", ("avx",), ("GGML_AVX",), ("-mavx",), (),
                 "__m256 a = _mm256_set1_ps(1.5f); float o[8]; _mm256_storeu_ps(o, _mm256_add_ps(a, a));"
                 " return o[7] == 3.0f ? 0 : 1;"),
    FeatureGroup("avx2", ("avx2",), ("GGML_AVX2",), ("-mavx2",), ("avx",),
                 "__m256i a = _mm256_set1_epi32(20); int o[8]; _mm256_storeu_si256((__m256i *)o, _mm256_add_epi32(a, a));"
                 " return o[5] == 40 ? 0 : 1;"),
    FeatureGroup("fma", ("fma",), ("GGML_FMA",), ("-mfma",), ("avx",),
                 "__m256 a = _mm256_set1_ps(2.0f); float o[8]; _mm256_storeu_ps(o, _mm256_fmadd_ps(a, a, a));"
                 " return o[0] == 6.0f ? 0 : 1;"),
    FeatureGroup("f16c", ("f16c",), ("GGML_F16C",), ("-mf16c",), ("avx",),
                 "return _cvtsh_ss(_cvtss_sh(0.5f, 0)) == 0.5f ? 0 : 1;"),
    FeatureGroup("bmi2", ("bmi2",), ("GGML_BMI2",), ("-mbmi2",), (),
                 "return _pdep_u32(5u, 0xf0u) == 0x50u ? 0 : 1;"),
    FeatureGroup("avx_vnni", ("avx_vnni",), ("GGML_AVX_VNNI",), ("-mavxvnni",), ("avx2",),
                 "__m256i a = _mm256_set1_epi8(2); int o[8];"
                 " _mm256_storeu_si256((__m256i *)o, _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, a));"
                 " return o[3] == 16 ? 0 : 1;"),
    FeatureGroup("avx512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"), ("GGML_AVX512",),
                 ("-mavx512f", "-mavx512cd", "-mavx512vl", "-mavx512dq", "-mavx512bw"), ("avx2",),
                 "__m512i a = _mm512_set1_epi16(300); short o[32];"
                 " _mm512_storeu_si512(o, _mm512_adds_epi16(a, a)); return o[31] == 600 ? 0 : 1;"),
    FeatureGroup("avx512_vbmi", ("avx512vbmi",), ("GGML_AVX512_VBMI",), ("-mavx512vbmi",), ("avx512",),
                 "unsigned char o[64]; __m512i idx = _mm512_set1_epi8(3), t = _mm512_set1_epi8(7);"
                 " _mm512_storeu_si512(o, _mm512_permutexvar_epi8(idx, t)); return o[0] == 7 ? 0 : 1;"),
    FeatureGroup("avx512_vnni", ("avx512_vnni",), ("GGML_AVX512_VNNI",), ("-mavx512vnni",), ("avx512",),
                 "__m512i a = _mm512_set1_epi8(2); int o[16];"
                 " _mm512_storeu_si512(o, _mm512_dpbusd_epi32(_mm512_setzero_si512(), a, a)); return o[9] == 16 ? 0 : 1;"),
    FeatureGroup("avx512_bf16", ("avx512_bf16",), ("GGML_AVX512_BF16",), ("-mavx512bf16",), ("avx512",),
                 "__m512 a = _mm512_set1_ps(1.0f); __m512bh b = _mm512_cvtne2ps_pbh(a, a); float o[16];"
                 " _mm512_storeu_ps(o, _mm512_dpbf16_ps(_mm512_setzero_ps(), b, b)); return o[2] == 2.0f ? 0 : 1;"),
    # ggml uses AMX only with AMX-INT8 and AVX512-VNNI; the probe multiplies two 16x64 int8 tiles.
    FeatureGroup("amx_int8", ("amx_tile", "amx_int8"), ("GGML_AMX_TILE", "GGML_AMX_INT8"), ("-mamx-tile", "-mamx-int8"),
                 ("avx512", "avx512_vnni"),
                 _AMX_SETUP + "    static signed char a[1024], b[1024]; static int c[256];"
                 " memset(a, 1, sizeof a); memset(b, 2, sizeof b);"
                 " _tile_zero(0); _tile_loadd(1, a, 64); _tile_loadd(2, b, 64); _tile_dpbssd(0, 1, 2);"
                 " _tile_stored(0, c, 64); _tile_release();"
                 " for (int i = 0; i < 256; i++) if (c[i] != 128) return 1; return 0;"),
    FeatureGroup("amx_bf16", ("amx_bf16",), ("GGML_AMX_BF16",), ("-mamx-tile", "-mamx-bf16"), ("amx_int8",),
                 _AMX_SETUP + "    static unsigned short a[512], b[512]; static float c[256];"
                 " for (int i = 0; i < 512; i++) a[i] = b[i] = 0x3f80; /* bf16 1.0 */"
                 " _tile_zero(0); _tile_loadd(1, a, 64); _tile_loadd(2, b, 64); _tile_dpbf16ps(0, 1, 2);"
                 " _tile_stored(0, c, 64); _tile_release();"
                 " for (int i = 0; i < 256; i++) if (c[i] != 32.0f) return 1; return 0;"),
)
GROUP_NAMES = tuple(g.name for g in GROUPS)
# Turned on for `safe`: a probe-confirmed subset that every x86-64 CPU of the last decade has,
# leaving out the groups that some sandboxes report but cannot run.
SAFE_GROUPS = ("sse42", "avx", "avx2", "fma", "f16c", "bmi2")
# Left out of `auto` although their probe may pass. On a Xeon that reports AMX (4 Dec 2026), the
# `auto` build died of SIGILL in ggml_backend_amx_mul_mat (tilezero in an OpenMP worker), with the
# permission granted and a threaded C probe of the same tiles passing; upstream tracks the fix in
# llama.cpp PR #26954 (per-thread XFD permission, tile config kept off the stack).
_AMX_CRASH = "ggml's AMX kernels crash in worker threads (llama.cpp PR #26954); name it to build it"
AUTO_LEFT_OUT = {"amx_int8": _AMX_CRASH, "amx_bf16": _AMX_CRASH}

_PROBE_PROGRAM = """#define _GNU_SOURCE
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
%s
}
"""


@dataclass
class Choice:
    """The groups to build with, and why each of the others is off."""

    features: list[str]
    off: dict[str, str]  # group -> reason

    @property
    def key(self) -> str:
        return "+".join(self.features) or "baseline"

    def describe(self) -> str:
        reasons = ", ".join(f"{name}: {why}" for name, why in self.off.items())
        return f"llama.cpp CPU features: {' '.join(self.features) or 'baseline x86-64'}" + (f" (off: {reasons})" if reasons else "")


def reported_cpu_flags() -> set[str]:
    """What the CPU says it has: ``X1_CPU_FLAGS`` when set (for tests), else /proc/cpuinfo."""
    override = os.environ.get("X1_CPU_FLAGS")
    if override is not None:
        return {f.strip() for f in override.replace(" ", ",").split(",") if f.strip()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def probe(group: FeatureGroup, workdir: Path, timeout: float = 20.0) -> str | None:
    """Compile and run the group's probe in a child process; None if it ran right, else why not."""
    compiler = _compiler()
    if compiler is None:
        return "no C compiler to probe with"
    source = workdir / f"{group.name}.c"
    binary = workdir / group.name
    source.write_text(_PROBE_PROGRAM % group.probe)
    built = subprocess.run([compiler, "-O0", *group.cc_flags, str(source), "-o", str(binary)], capture_output=True, text=True)
    if built.returncode != 0:
        first = (built.stderr.strip().splitlines() or ["?"])[0]
        return f"the compiler cannot build it ({first[:80]})"
    try:
        ran = subprocess.run([str(binary)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"probe hung for {timeout:.0f} s"
    if ran.returncode < 0:
        return f"probe killed by {signal.Signals(-ran.returncode).name}"
    if ran.returncode == 3:
        return "the kernel refused AMX tile state (arch_prctl)"
    if ran.returncode != 0:
        return "probe computed a wrong result"
    return None


def choose_features(mode: str = "auto", flags: set[str] | None = None, run_probe=probe) -> Choice:  # type: ignore[no-untyped-def]
    """``auto``: every reported group whose probe passes; ``safe``: the same, limited to
    SAFE_GROUPS; ``baseline``: none; or an explicit comma list (still probed)."""
    flags = reported_cpu_flags() if flags is None else flags
    if mode == "baseline":
        return Choice([], {name: "baseline asked for" for name in GROUP_NAMES})
    if mode in ("auto", "safe"):
        wanted = set(GROUP_NAMES) - set(AUTO_LEFT_OUT) if mode == "auto" else set(SAFE_GROUPS)
    else:
        wanted = {w.strip() for w in mode.split(",") if w.strip()}
        unknown = wanted - set(GROUP_NAMES)
        if unknown:
            raise ValueError(
                f"unknown CPU feature group(s) {sorted(unknown)}; valid: auto, safe, baseline, or a list of {', '.join(GROUP_NAMES)}"
            )
    chosen: list[str] = []
    off: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="x1-probe-") as tmp:
        for group in GROUPS:
            missing = [f for f in group.cpu_flags if f not in flags]
            if group.name not in wanted:
                if not missing:
                    if mode == "auto":  # the only groups auto does not want
                        off[group.name] = AUTO_LEFT_OUT[group.name]
                    elif mode == "safe":
                        off[group.name] = "left out by 'safe'"
                    else:
                        off[group.name] = "not named"
                continue
            if missing:
                if mode not in ("auto", "safe"):
                    off[group.name] = f"CPU does not report {' '.join(missing)}"
                continue  # not reported: nothing to say
            needs = [r for r in group.requires if r not in chosen]
            if needs:
                off[group.name] = f"needs {' '.join(needs)}"
                continue
            why = run_probe(group, Path(tmp))
            if why is not None:
                off[group.name] = f"reported but unusable: {why}"
                continue
            chosen.append(group.name)
    return Choice(chosen, off)


def cmake_args(features: list[str]) -> str:
    """Every x86 switch named ON or OFF, with -march=native off, so nothing is left to the CPU's word."""
    on = {opt for g in GROUPS if g.name in features for opt in g.cmake}
    every = sorted({opt for g in GROUPS for opt in g.cmake})
    return " ".join(["-DGGML_NATIVE=OFF", *(f"-D{opt}={'ON' if opt in on else 'OFF'}" for opt in every)])


def x1_cache_root() -> Path:
    root = os.environ.get("X1_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "x1")
    return Path(root)


def wheel_dir(choice: Choice) -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return x1_cache_root() / "wheels" / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{tag}-{choice.key}"


def build_record_path() -> Path:
    """Where the environment remembers which feature set its llama.cpp was built with."""
    return Path(sys.prefix) / "share" / "x1" / "llama_cpp_build.json"


def read_build_record() -> dict | None:
    try:
        return json.loads(build_record_path().read_text())
    except (OSError, ValueError):
        return None


def _installed_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, env=env)


def install(choice: Choice, *, rebuild: bool = False, log=print) -> Path:  # type: ignore[no-untyped-def]
    """Build the wheel for ``choice`` once per machine (cached), then install it into this environment."""
    folder = wheel_dir(choice)
    record = read_build_record()
    if not rebuild and record and record.get("features") == choice.features and _installed_version() == LLAMA_CPP_VERSION:
        log(f"llama-cpp-python {LLAMA_CPP_VERSION} for [{choice.key}] is already installed in {sys.prefix}")
        return folder
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if rebuild or not wheels:
        shutil.rmtree(folder, ignore_errors=True)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        args = cmake_args(choice.features)
        log(f"building llama-cpp-python {LLAMA_CPP_VERSION} for [{choice.key}] (compiles llama.cpp: ~4-5 min on 2 cores, once per machine)")
        log(f"  CMAKE_ARGS=\"{args}\"")
        env = {**os.environ, "CMAKE_ARGS": args, "FORCE_CMAKE": "1"}
        start = time.monotonic()
        # --no-cache-dir: pip's wheel cache would hand back a wheel built with other CMAKE_ARGS.
        _pip("wheel", "-q", "--no-deps", "--no-cache-dir", "--no-binary", "llama-cpp-python",
             f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-w", str(partial), env=env)
        partial.rename(folder)
        wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
        log(f"  built in {time.monotonic() - start:.0f} s, cached in {folder}")
    else:
        log(f"reusing the cached llama-cpp-python wheel for [{choice.key}]: {wheels[-1].name} ({folder})")
    _pip("install", "-q", "--force-reinstall", "--no-deps", str(wheels[-1]))
    _pip("install", "-q", str(wheels[-1]))  # its own dependencies, if missing
    path = build_record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": LLAMA_CPP_VERSION, "features": choice.features, "off": choice.off,
                                  "cmake_args": cmake_args(choice.features)}, indent=1))
    return wheels[-1]


def unsupported_build_features(flags: set[str] | None = None) -> list[str]:
    """Groups this environment's llama.cpp was built with that this CPU does not report (e.g. a
    .venv carried to another machine); such a build would fault on an illegal instruction."""
    record = read_build_record()
    if not record:
        return []
    flags = reported_cpu_flags() if flags is None else flags
    by_name = {g.name: g for g in GROUPS}
    return [name for name in record.get("features", []) if name in by_name and not set(by_name[name].cpu_flags) <= flags]


def _next_rung(features: list[str]) -> str | None:
    """After a crash: drop AMX (the usual culprit), then to the safe set, then to the baseline, then give up."""
    without_amx = [f for f in features if f not in AUTO_LEFT_OUT]
    if without_amx != features:
        return ",".join(without_amx) if without_amx else "baseline"
    if any(f not in SAFE_GROUPS for f in features):
        return "safe"
    if features:
        return "baseline"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x1.models.llama_cpp.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="choose the CPU features, build (or reuse) and install the wheel")
    choose = sub.add_parser("choose", help="print the choice only")
    for command in (inst, choose):
        command.add_argument("--features", default=os.environ.get("X1_LLAMA_FEATURES", "auto"),
                             help="auto (probe every reported group), safe, baseline, or a comma list of " + ", ".join(GROUP_NAMES))
    inst.add_argument("--rebuild", action="store_true", help="compile again even if a cached wheel exists")
    check = sub.add_parser("check", help="decode a few tokens of the bundled SmolLM2 in a child process")
    check.add_argument("--fallback", action="store_true", help="on a crash, rebuild with the next safer set and check again")
    args = parser.parse_args(argv)

    if args.command in ("install", "choose"):
        try:
            choice = choose_features(args.features)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(choice.describe(), flush=True)
        if args.command == "install":
            install(choice, rebuild=args.rebuild)
        return 0

    from x1.models.base import BackendError
    from x1.models.llama_cpp.check import self_check

    while True:
        try:
            print(self_check(), flush=True)
            return 0
        except BackendError as err:
            print(f"llama.cpp self-check FAILED: {err}", flush=True)
            record = read_build_record() or {"features": []}
            rung = _next_rung(list(record.get("features", [])))
            if not args.fallback or rung is None:
                return 1
            choice = choose_features(rung)
            print(f"rebuilding with the '{rung}' set: {choice.describe()}", flush=True)
            install(choice)


if __name__ == "__main__":
    raise SystemExit(main())
