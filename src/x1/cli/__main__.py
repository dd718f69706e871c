"""``python -m x1.cli``: the same app as the ``x1`` console script (the tests and benchmarks start servers this way)."""

from x1.cli import app

app()
