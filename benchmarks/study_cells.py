"""What the benchmarks that replay a committed scaling-study cell share: their arguments and the loading."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from x1.pipelines.scale import ScaleConfig, load_study_tasks, read_cell
from x1.tasks.base import Task


def add_cell_arguments(parser: argparse.ArgumentParser, cell: str, cell_help: str) -> None:
    parser.add_argument("--study", default="examples/scale-arithmetic.yaml")
    parser.add_argument("--out", default="docs/results/scaling-study/scale", help="the study's output folder")
    parser.add_argument("--cell", default=cell, help=cell_help)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)


def load_cell(args: argparse.Namespace) -> tuple[ScaleConfig, list[dict], list[Task]]:
    """(the study, the cell's trace records, the study's evaluation problems); torch set to ``--threads``."""
    torch.set_num_threads(args.threads)
    study = ScaleConfig.from_yaml(args.study)
    arm, _, budget = args.cell.rpartition("-N")
    records = list(read_cell(Path(args.out), arm, int(budget)).values())
    if not records:
        raise SystemExit(f"no traces for cell {args.cell} under {args.out}; fix: name a finished cell (e.g. majority-N1, beam-prm-N4)")
    tasks, _ = load_study_tasks(study)
    return study, records, tasks
