"""`x1 train`: the two-phase training recipe (x1.pipelines.recipe) from one YAML, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from x1.cli.root import console, err_console, fail
from x1.config import ConfigError
from x1.models.base import BackendError


def train(config: Annotated[Path, typer.Argument(help="recipe YAML (see examples/recipe-smollm2.yaml)")]) -> None:
    """The two-phase training recipe: SFT + value model, then MCTS rounds. Re-run to resume."""
    from x1.pipelines.recipe import RecipeConfig, RecipeError, metrics_table, run_recipe
    from x1.tasks.base import TaskError

    try:
        cfg = RecipeConfig.from_yaml(config)
        result = run_recipe(cfg, log=lambda message: err_console.print(f"[dim]{message}[/]"))
    except (BackendError, ConfigError, RecipeError, TaskError, ValueError, OSError) as err:
        fail(str(err))
    console.print(metrics_table(result.metrics))
    console.print(f"metrics: {result.metrics_path}  state: {result.output_dir / 'state.json'}")
