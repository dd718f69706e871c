# The two commands of the README. Both set up .venv themselves on a fresh machine.
.PHONY: demo test lint bench setup

demo:  ## set up and run the main job: tree search on sample problems with the bundled model
	scripts/setup.sh cpu,tasks
	.venv/bin/x1 demo

test:  ## set up and run the whole test suite
	scripts/setup.sh dev
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/python -m pytest -q

bench:  ## backend and engine benchmarks (prints tables)
	scripts/setup.sh dev
	.venv/bin/python benchmarks/backends.py
