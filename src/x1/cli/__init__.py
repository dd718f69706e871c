"""The `x1` command: a thin skin over configs and pipelines, one module per command group.

``root`` holds the app, the consoles and ``fail``; ``options`` the options several commands share;
``solve`` (solve, eval, demo and the listings), ``view``, ``scale``, ``train``, ``serve``, ``data`` and
``fit`` the commands. This module only registers them, in the order ``x1 --help`` lists them.
"""

# modules, not their functions: ``from x1.cli.solve import solve`` would shadow the module x1.cli.solve
from x1.cli import data, fit, scale, serve, solve, train, view
from x1.cli.root import app

app.command("models")(solve.models)
app.command("strategies")(solve.strategies)
app.command("solve")(solve.solve)
app.command("demo")(solve.demo)
app.command("doctor")(solve.doctor)
app.command("tasks")(solve.tasks)
app.command("eval")(solve.eval_)
app.command("view")(view.view_command)
app.command("report")(view.report_command)
app.command("scale")(scale.scale_command)
app.command("train")(train.train)
app.add_typer(serve.serve_app, name="serve")
app.add_typer(data.data_app, name="data")
app.add_typer(fit.fit_app, name="fit")

__all__ = ["app"]
