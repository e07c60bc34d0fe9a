"""The `keras-meta` command: short meta-training runs with a visible result.

    keras-meta train sinusoid [--iterations N] [--shots K] [--output DIR]
    keras-meta train glyphs [--iterations N] [--ways N] [--output DIR]
    keras-meta train navigation [--iterations N] [--output DIR]
    keras-meta evaluate RUN_DIR [--seeds N] [--output DIR] [--no-compute]

`train` writes `run.json` (the task family and its configuration) next to the saved
learner, so `evaluate` can rebuild the matching meta-train and meta-test task families.

`keras_meta.cli.parser` parses the command line with the standard library only, so
`--help` and argument errors answer without importing TensorFlow; a subcommand's module
(`train`, `evaluate`) is imported when that subcommand runs.
"""

from keras_meta.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
