"""x1: build, run, train and evaluate reasoning language models from the blueprint's parts."""

__version__ = "0.1.0"
