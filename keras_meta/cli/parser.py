"""The command line of `keras-meta`: parsing, checks and dispatch.

This module imports the standard library only: `keras-meta --help`, every subcommand's
`--help` and every argument error answer without importing TensorFlow or Keras. The
subcommand's module is imported once its arguments are known to be valid.
"""

import argparse

FAMILIES = ("sinusoid", "glyphs", "navigation")
# The `train` flags each family uses besides --iterations, --seed and --output; a flag given
# for a family that does not use it is refused rather than ignored.
FAMILY_FLAGS = {
    "sinusoid": ("shots", "meta_batch_size", "eval_lr"),
    "glyphs": ("ways", "meta_batch_size", "eval_lr"),
    "navigation": ("meta_batch_size",),
}


def build_parser():
    """Returns the `argparse.ArgumentParser` of `keras-meta` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-meta",
        description="keras_meta demos: meta-train a learner on a built-in task family, then evaluate it.")
    commands = parser.add_subparsers(dest="command", required=True,
                                     help="the subcommand to run (see `keras-meta COMMAND --help`)")

    train = commands.add_parser(
        "train", help="meta-train on a built-in task family",
        description="Meta-train on a built-in task family and save the run to --output: the learner, "
                    "its figures and, for sinusoid and glyphs, run.json for `keras-meta evaluate`.")
    train.add_argument("family", choices=FAMILIES,
                       help="sinusoid: MAML regression with adaptation plots; glyphs: MAML few-shot "
                            "classification on the embedded Hershey glyphs; navigation: MAML-RL on 2D "
                            "navigation with a trajectories figure")
    train.add_argument("--iterations", type=int, default=None,
                       help="meta-training steps (default: 10000 for sinusoid, 500 for glyphs, "
                            "100 meta-iterations for navigation)")
    train.add_argument("--shots", type=int, default=None,
                       help="support (and query) points per sinusoid task (default: 10; sinusoid only)")
    train.add_argument("--ways", type=int, default=None,
                       help="classes per glyphs task, one shot each (default: 5; glyphs only)")
    train.add_argument("--meta-batch-size", type=int, default=None,
                       help="tasks per meta-step (default: 25 for sinusoid, 8 for glyphs, 20 for "
                            "navigation)")
    train.add_argument("--eval-lr", type=float, default=None,
                       help="inner learning rate when adapting to held-out tasks after training "
                            "(default: 0.01 for sinusoid, 0.1 for glyphs: its training inner "
                            "rate; not navigation)")
    train.add_argument("--seed", type=int, default=0, help="random seed of the whole run (default: 0)")
    train.add_argument("--output", default=None,
                       help="folder for the run's files (default: runs/FAMILY)")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a saved run (learning speed, sample efficiency, generalization, "
                         "compute) into RUN_DIR/evaluation",
        description="Evaluate a run saved by `keras-meta train` over several seeds and write a report "
                    "(results.csv, Markdown, figures).")
    evaluate.add_argument("run_dir", help="folder written by `keras-meta train` (holds run.json)")
    evaluate.add_argument("--seeds", type=int, default=3,
                          help="evaluation seeds the confidence intervals are taken over (default: 3)")
    evaluate.add_argument("--output", default=None, help="report folder (default: RUN_DIR/evaluation)")
    evaluate.add_argument("--no-compute", action="store_true",
                          help="skip the compute section (meta-steps per second, adaptation latency, peak memory)")
    return parser


def main(argv=None):
    """Runs `keras-meta` on `argv` (default: `sys.argv[1:]`) and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        if args.seeds < 1:
            parser.error(f"Expected --seeds to be positive. Received: {args.seeds}")
        from keras_meta.cli import evaluate

        evaluate.evaluate_run(args)
        return 0
    # Checked before any import or output directory, so a typo costs nothing.
    for flag in ("iterations", "shots", "ways", "meta_batch_size", "eval_lr"):
        value = getattr(args, flag)
        name = "--" + flag.replace("_", "-")
        if value is not None and not value > 0:
            parser.error(f"Expected {name} to be positive. Received: {name}={value}")
        if value is not None and flag != "iterations" and flag not in FAMILY_FLAGS[args.family]:
            parser.error(f"Expected {name} only for a family that uses it "
                         f"({', '.join(f for f, used in FAMILY_FLAGS.items() if flag in used)}). "
                         f"Received: {name}={value} for {args.family}")
    from keras_meta.cli import train

    train.train(args)
    return 0
