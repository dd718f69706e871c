"""Turning a task spec string ("rg:gsm_symbolic", "data.jsonl", "x1paper:SAT.json.bz2", ...) into tasks.

Every task gets a stable ``id`` derived from the spec, seed, configuration and its index, so an
interrupted evaluation can resume by skipping the ids it has already done, and ``source`` set to
the spec as given. Heavy packages (reasoning-gym, champ-dataset, math-verify) are imported only
by the sources that need them.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from x1.tasks.answers import extract_answer, numbers_equal, parse_number
from x1.tasks.base import Task, TaskError, Verification
from x1.tasks.math_verify import is_prose, math_equal, math_equal_any
from x1.tasks.x1paper import load_x1paper

DEFAULT_N = 100  # tasks drawn from a generated source (rg:, synthetic:) when n is not given
DEFAULT_DIFFICULTY = 0.3
# reasoning-gym draws item i of seed s from s + i (seeds 0 and 1 overlap, shifted by one): x1's seed k starts at k * stride
RG_SEED_STRIDE = 1 << 20  # disjoint streams below a million problems; seed 0 keeps the problems it always had
PREFIXES = ("rg:NAME", "jsonl:PATH", "x1paper:PATH", "synthetic:{sat,knapsack,zebra,prontoqa}", "champ", "samples")

SAMPLES: tuple[tuple[str, str], ...] = (
    ("A baker made 24 muffins and sold 9. How many muffins are left?", "15"),
    ("Tom has 3 boxes with 6 pencils in each box. How many pencils does Tom have?", "18"),
    ("A bus has 40 seats. 27 people are on the bus. How many seats are empty?", "13"),
    ("Sara buys 4 notebooks that cost 3 dollars each. She pays with a 20 dollar bill. "
     "How many dollars of change does she get?", "8"),
    ("There are 35 apples shared equally among 7 children. How many apples does each child get?", "5"),
    ("A farmer has 12 cows and 8 sheep. He buys 5 more sheep. How many animals does he have now?", "25"),
    ("Lena reads 15 pages a day. How many pages does she read in 6 days?", "90"),
    ("A rope is 50 meters long. Two pieces of 12 meters each are cut off. How many meters of rope "
     "remain?", "26"),
)  # fmt: skip


def list_task_sources() -> list[tuple[str, str]]:
    """(spec, one-line description) for every task source, as ``x1 tasks`` shows them."""
    from x1.tasks.synthetic import DESCRIPTIONS

    sources = [
        ("rg:NAME", "any reasoning-gym dataset, e.g. rg:gsm_symbolic; scored by the dataset's own checker"),
        (
            "jsonl:PATH",
            "your JSONL file (or a bare path ending in .jsonl): question/answer/id fields, GSM8K "
            "'#### n' understood; checked by math equivalence",
        ),
    ]
    sources.append(
        (
            "x1paper:PATH",
            "the x1 paper's benchmark files (or a bare .json/.json.bz2 path): SAT, knapsack, Einstein, "
            "PrOntoQA by level; level=3, levels=1-4, type=sat; results by level",
        )
    )
    sources += [(f"synthetic:{name}", f"{desc} (difficulty=0..1)") for name, desc in DESCRIPTIONS.items()]
    sources += [
        ("champ", "CHAMP: 270 competition math problems with first-wrong-step labels (champ-dataset)"),
        ("samples", f"{len(SAMPLES)} easy built-in grade-school word problems, for the demo"),
    ]
    return sources


def rg_dataset_names() -> list[str]:
    """Names accepted after ``rg:`` (needs reasoning-gym installed)."""
    return sorted(_reasoning_gym().factory.DATASETS)


def load_tasks(spec: str, n: int | None = None, seed: int = 0, **config: Any) -> list[Task]:
    """The first ``n`` tasks of ``spec`` (all of a finite source, or ``DEFAULT_N`` generated ones)."""
    spec = spec.strip()
    if n is not None and n < 0:
        raise TaskError(f"n must be 0 or more, got {n}")
    prefix, sep, rest = spec.partition(":")
    if prefix == "rg" and sep:
        return _load_rg(spec, rest, n, seed, config)
    if prefix == "jsonl" and sep:
        return _load_jsonl(spec, rest, n, config)
    if prefix == "x1paper" and sep:
        return load_x1paper(spec, rest, n, config)
    if prefix == "synthetic" and sep:
        return _load_synthetic(spec, rest, n, seed, config)
    if spec == "champ":
        return _load_champ(spec, n, config)
    if spec == "samples":
        return _load_samples(spec, n, seed, config)
    if spec.endswith(".jsonl"):
        return _load_jsonl(spec, spec, n, config)
    if spec.endswith((".json", ".json.bz2")):  # the only JSON-document format x1 reads; its loader checks the content
        return load_x1paper(spec, spec, n, config)
    raise TaskError(
        f"unknown task source {spec!r}; valid: {', '.join(PREFIXES)}, or a path ending in .jsonl, .json or .json.bz2 "
        "(run `x1 tasks` to list them)"
    )


def _no_config(spec: str, config: dict[str, Any], allowed: tuple[str, ...] = ()) -> None:
    extra = sorted(set(config) - set(allowed))
    if extra:
        takes = f"it takes only {', '.join(allowed)}" if allowed else "it takes no options"
        raise TaskError(f"{spec}: unknown option(s) {', '.join(extra)}; {takes}")


def _config_tag(config: dict[str, Any]) -> str:
    """A short hash of the options, part of task ids so different configs never share an id."""
    if not config:
        return ""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return ":cfg" + hashlib.sha256(blob).hexdigest()[:8]


def number_verifier(answer: str | None, gold: Any) -> Verification:
    """Exact numeric comparison (``numbers_equal``), for tasks whose gold is a plain number."""
    if answer is None:
        return Verification(0.0, "no answer could be extracted")
    if numbers_equal(answer, gold):
        return Verification(1.0, "number: equals gold")
    return Verification(0.0, f"number: {answer!r} differs from gold {gold!r}")


# --- reasoning-gym ------------------------------------------------------------------------------


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
        import reasoning_gym.factory
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise TaskError("rg: tasks need reasoning-gym: pip install reasoning-gym (or 'x1[tasks]')") from err
    return reasoning_gym


class RGVerifier:
    """Scores with the dataset's own ``score_answer``, which needs the whole entry, not just the gold."""

    def __init__(self, dataset: Any, entry: dict[str, Any], name: str) -> None:
        self.dataset, self.entry, self.name = dataset, entry, name

    def __call__(self, answer: str | None, gold: Any) -> Verification:
        try:
            raw = float(self.dataset.score_answer(answer, self.entry))
        except Exception as err:  # a checker bug must not stop an evaluation
            return Verification(0.0, f"reasoning-gym {self.name} checker raised {type(err).__name__}: {err}")
        score = min(max(raw, 0.0), 1.0) if raw == raw else 0.0  # clamp, and NaN counts as wrong
        return Verification(score, f"reasoning-gym {self.name} checker: {raw:g}")


def _load_rg(spec: str, name: str, n: int | None, seed: int, config: dict[str, Any]) -> list[Task]:
    rg = _reasoning_gym()
    names = sorted(rg.factory.DATASETS)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:5]
        raise TaskError(f"unknown reasoning-gym dataset {name!r}; close names: {', '.join(close)} ({len(names)} in all; run `x1 tasks`)")
    size = DEFAULT_N if n is None else n
    if size == 0:
        return []
    try:
        dataset = rg.create_dataset(name, seed=seed * RG_SEED_STRIDE, size=size, **config)
    except (TypeError, ValueError, AssertionError) as err:
        _, config_cls = rg.factory.DATASETS[name]
        import dataclasses

        fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in ("seed", "size")]
        raise TaskError(f"{spec}: bad option(s) {config}: {err}; options are {', '.join(fields)}") from err
    tag = _config_tag(config)
    tasks = []
    for i in range(size):
        entry = dataset[i]
        tasks.append(
            Task(
                id=f"rg:{name}:seed{seed}{tag}:{i}",
                question=entry["question"],
                gold=entry["answer"],
                verifier=RGVerifier(dataset, entry, name),
                source=spec,
                meta={"dataset": name, "index": i, "entry": entry},
            )
        )
    return tasks


# --- JSONL files --------------------------------------------------------------------------------

_GSM_HASHES = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gold_from_answer(answer: Any) -> tuple[str, str | None]:
    """(gold answer, worked solution or None): GSM8K's ``... #### 72`` becomes ``72``."""
    text = answer if isinstance(answer, str) else json.dumps(answer) if isinstance(answer, list | dict) else str(answer)
    match = _GSM_HASHES.search(text) if "####" in text else None
    if not match:
        return text.strip(), None
    final = match.group(1).strip()
    number = parse_number(final)
    if number is not None and re.fullmatch(r"[-$\d,./\s]+", final):
        final = final.replace(",", "").replace("$", "").strip()
    return final, text[: match.start()].strip()


def _load_jsonl(spec: str, path_text: str, n: int | None, config: dict[str, Any]) -> list[Task]:
    _no_config(spec, config, ("question_field", "answer_field", "id_field"))
    q_field = config.get("question_field", "question")
    a_field = config.get("answer_field", "answer")
    id_field = config.get("id_field", "id")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise TaskError(f"{spec}: no such file {str(path)!r}")
    tasks: list[Task] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if n is not None and len(tasks) >= n:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TaskError(
                    f"{path.name} line {lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                    "fix: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(
                    f"{path.name} line {lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                    f'each line must be one JSON object such as {{"{q_field}": "...", "{a_field}": "..."}}'
                ) from err
            if not isinstance(record, dict):
                raise TaskError(
                    f"{path.name} line {lineno}: expected a JSON object, got {type(record).__name__}; "
                    f'each line must look like {{"{q_field}": "...", "{a_field}": "..."}}'
                )
            for role, name in (("question", q_field), ("answer", a_field)):
                if name not in record:
                    available = ", ".join(sorted(record)) or "none"
                    raise TaskError(
                        f"{path.name} line {lineno}: no field {name!r} (fields there: {available}); "
                        f"pass {role}_field=<name> to use another field"
                    )
            gold, worked = gold_from_answer(record[a_field])
            rec_id = record.get(id_field, lineno)
            tasks.append(
                Task(
                    id=f"jsonl:{path.name}:{rec_id}",
                    question=str(record[q_field]),
                    gold=gold,
                    verifier=math_equal,
                    source=spec,
                    meta={"file": str(path), "line": lineno, "record": record, "solution": worked},
                )
            )
    return tasks


# --- synthetic domains --------------------------------------------------------------------------


class InstanceVerifier:
    """Binds a synthetic instance to its domain's checker (picklable, unlike a lambda)."""

    def __init__(self, verify: Callable[[Any, str | None], Verification], instance: Any) -> None:
        self.verify, self.instance = verify, instance

    def __call__(self, answer: str | None, gold: Any) -> Verification:
        return self.verify(self.instance, answer)


def _load_synthetic(spec: str, name: str, n: int | None, seed: int, config: dict[str, Any]) -> list[Task]:
    from x1.tasks.synthetic import DOMAINS, zebra

    if name not in DOMAINS:
        raise TaskError(f"unknown synthetic domain {name!r}; choose one of {', '.join(DOMAINS)}")
    _no_config(spec, config, ("difficulty",))
    try:
        difficulty = float(config.get("difficulty", DEFAULT_DIFFICULTY))
    except (TypeError, ValueError) as err:
        raise TaskError(f"{spec}: difficulty must be a number in [0, 1]") from err
    if not 0.0 <= difficulty <= 1.0:
        raise TaskError(f"{spec}: difficulty must lie in [0, 1], got {difficulty}")
    module = DOMAINS[name]
    tasks = []
    for i in range(DEFAULT_N if n is None else n):
        instance = module.generate(difficulty, random.Random(f"{name}:{seed}:{i}"))
        extractor = zebra.extractor(instance) if module is zebra else module.extract
        tasks.append(
            Task(
                id=f"synthetic:{name}:d{difficulty:g}:seed{seed}:{i}",
                question=instance.question,
                gold=instance.answer,
                verifier=InstanceVerifier(module.verify, instance),
                extractor=extractor,
                source=spec,
                meta={"domain": name, "difficulty": difficulty, **instance.to_meta()},
            )
        )
    return tasks


# --- CHAMP --------------------------------------------------------------------------------------


def champ_gold_variants(answer: str) -> list[str]:
    """Acceptable forms of a CHAMP answer: "2*C(10, 5), or equivalently 504" gives both sides,
    "100 (i.e., all values)" gives "100", "0 is the only possible value" gives "0"."""
    variants = [answer.strip()]
    for part in re.split(r",?\s*or equivalently\s*", answer):
        part = part.strip()
        cut = part.find(" (i.e.")
        if cut > 0:
            part = part[:cut].strip()
        for pattern in (r"(.+?) is the only possible value", r"the limit exists and is equal to (.+)"):
            match = re.fullmatch(pattern, part, flags=re.IGNORECASE)
            if match:
                part = match.group(1).strip()
        if part and part not in variants:
            variants.append(part)
    return variants


def champ_verifier(answer: str | None, gold: Any) -> Verification:
    """Math equivalence against any acceptable form of the CHAMP answer."""
    return math_equal_any(answer, champ_gold_variants(str(gold)))


@functools.cache
def _champ_dataset() -> Any:
    try:
        import champ_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise TaskError("champ needs the champ-dataset package: pip install champ-dataset") from err
    return champ_dataset.load("v0")


def _load_champ(spec: str, n: int | None, config: dict[str, Any]) -> list[Task]:
    _no_config(spec, config)
    dataset = _champ_dataset()
    tasks = []
    for key, problem in dataset.problems.items():
        if n is not None and len(tasks) >= n:
            break
        labels = {
            name: {
                "model": ann.author,
                "prompt": name.split("|", 1)[-1],
                "solution": ann.text,
                "first_wrong_step": None if ann.start_idx is None else ann.wrong_step(),
                "start_idx": ann.start_idx,
                "end_idx": ann.end_idx,
            }
            for name, ann in (problem.fws_annotations or {}).items()
        }
        variants = champ_gold_variants(problem.answer)
        tasks.append(
            Task(
                id=f"champ:{key}",
                question=problem.text,
                gold=problem.answer,
                verifier=champ_verifier,
                source=spec,
                meta={
                    "category": problem.category,
                    "reference_steps": [step.text for step in problem.solution.steps],
                    "fws_annotations": labels,
                    "gold_variants": variants,
                    "answer_kind": "text" if all(is_prose(v) for v in variants) else "math",
                },
            )
        )
    return tasks


# --- built-in samples ---------------------------------------------------------------------------


def _load_samples(spec: str, n: int | None, seed: int, config: dict[str, Any]) -> list[Task]:
    _no_config(spec, config)
    order = list(range(len(SAMPLES)))
    if seed:
        random.Random(seed).shuffle(order)
    return [
        Task(
            id=f"samples:{i}",
            question=SAMPLES[i][0],
            gold=SAMPLES[i][1],
            verifier=number_verifier,
            extractor=extract_answer,
            source=spec,
        )
        for i in order[: len(SAMPLES) if n is None else n]
    ]
