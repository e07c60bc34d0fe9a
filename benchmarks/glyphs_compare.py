"""MAML, MAML++, ProtoNet, MetaLSTM, MANN and SNAIL on glyphs 1-shot, each meta-trained for the same CPU time.

For every way count, each learner is meta-trained on the background fonts in chunks of
`--chunk` meta-steps until `--seconds` of training time is spent, then evaluated on the
same held-out tasks from the evaluation fonts: mean query accuracy with its 95%
confidence interval over tasks. The budget is the process's CPU time
(`time.process_time()`, all its threads) inside `fit`, less the first call's tracing;
on a machine shared with other jobs this stays fair between learners run at different
times or side by side, where wall-clock time would charge one learner for another job's
load. The last chunk may overrun the budget; the table gives the time actually counted.

Settings (conv4 with `--filters` filters, Adam 1e-3 (MANN: `--mann-lr`), the same
meta-batch for all):
MAML the paper's (inner lr 0.4, 1 step, 3 at test for 5-way; 0.1, 5 and 5 for 20-way);
MAML++ the released Omniglot configuration (LSLR initialised at 0.1, 5 steps in training
and test, per-step BatchNorm, multi-step loss annealed over `--msl-chunks` chunks, second
order throughout) with its cosine outer-LR annealing from 1e-3 to 1e-5 taken over the
time budget (a step's rate set from the fraction of the budget spent before its chunk);
ProtoNet on conv4 without its Dense head (the embedding), trained at the test way count;
MetaLSTM (Ravi & Larochelle) on conv4 with `--meta-lstm-steps` inner steps in training
and test from an input gate of 0.1, first order as in the paper;
MANN (default: the paper's 128x40 memory, 200-unit LSTM, 4 read heads; `--mann-*` flags)
and SNAIL (`--snail-head paper` or `small`) on the same embedding, the support sequence
then each query.

    python benchmarks/glyphs_compare.py --ways 5 20 --seconds 120 60 --filters 16 \
        --snail-head small --mann-memory 32 20 --mann-units 64 --mann-read-heads 1 \
        --mann-lr 3e-3 --eval-tasks 200
"""

import argparse
import json
import math
import time

import keras

import keras_meta as km
from keras_meta.algorithms.snail import PAPER_BLOCKS
from glyphs_fewshot import PAPER, episodes, held_out

# Paper figures on Omniglot 1-shot {ways: accuracy}; reported beside the glyph results,
# which are a different dataset (DESIGN §6).
OMNIGLOT = {"maml": {5: 0.987, 20: 0.958}, "maml_pp": {5: 0.9947, 20: 0.9765},
            "protonet": {5: 0.988, 20: 0.960}, "snail": {5: 0.9907, 20: 0.9764}}
# MANN reports accuracy per instance of a class in 50-step episodes, not N-way 1-shot;
# the meta-learner LSTM reports mini-ImageNet only (5-way; no 20-way figure).
PAPER_NOTES = {"mann": "Omniglot 2nd instance 82.8% (5 classes; 1st 36.4%, 10th 98.1%)",
               "meta_lstm": "mini-ImageNet 5-way 1-shot 43.44%"}
NAMES = {"maml": "MAML", "maml_pp": "MAML++", "protonet": "ProtoNet",
         "meta_lstm": "MetaLSTM", "mann": "MANN", "snail": "SNAIL"}
OUTER_LR, MAML_PP_MIN_LR = 1e-3, 1e-5
# The small SNAIL head that leaves the chance plateau within about 250 meta-steps on
# glyphs (RESULTS.md), against the paper's five-block head.
SNAIL_HEADS = {"paper": PAPER_BLOCKS,
               "small": (("attention", 32, 16), ("tc", 32), ("attention", 64, 32))}


def paper_figure(name, ways):
    figure = OMNIGLOT.get(name, {}).get(ways)
    if figure:
        return f"Omniglot {figure:.2%}"
    return PAPER_NOTES.get(name, "—") if ways == 5 or name == "mann" else "—"


def build(name, ways, image_shape, args):
    """`(learner, test steps, per-chunk hook)` for learner `name`, compiled."""
    keras.utils.set_random_seed(args.seed)
    model = km.models.conv4(ways, image_shape, args.filters)
    on_chunk = None
    outer_lr = OUTER_LR
    if name == "maml":
        paper = PAPER[ways]
        learner = km.MAML(model, inner_lr=paper["inner_lr"],
                          inner_steps=paper["train_steps"])
        steps = [paper["test_steps"]]
    elif name == "maml_pp":
        learner = km.MAMLPlusPlus(model, inner_lr=0.1, inner_steps=5,
                                  steps_per_epoch=args.chunk, msl_epochs=args.msl_chunks)
        steps = [5]

        def on_chunk(progress):
            learner.optimizer.learning_rate = MAML_PP_MIN_LR + 0.5 * (
                OUTER_LR - MAML_PP_MIN_LR) * (1 + math.cos(math.pi * min(progress, 1.0)))
    elif name == "meta_lstm":
        learner = km.MetaLSTM(model, inner_lr=0.1, inner_steps=args.meta_lstm_steps)
        steps = [args.meta_lstm_steps]
    else:
        # Model-based learners and ProtoNet embed with conv4 without its Dense head.
        embedding = keras.Model(model.inputs, model.layers[-2].output)
        if name == "mann":
            slots, size = args.mann_memory
            learner = km.MANN(embedding, num_classes=ways, memory_slots=slots,
                              memory_size=size, controller_units=args.mann_units,
                              read_heads=args.mann_read_heads)
            outer_lr = args.mann_lr
        elif name == "snail":
            learner = km.SNAIL(embedding, num_classes=ways, shots=1,
                               blocks=SNAIL_HEADS[args.snail_head])
        else:
            learner = km.ProtoNet(embedding)
        steps = [0]
    learner.compile(optimizer=keras.optimizers.Adam(outer_lr))
    return learner, steps, on_chunk


def train_for(learner, tasks, seconds, args, on_chunk=None):
    """Meta-trains `learner` in chunks of `args.chunk` steps until `seconds` are spent.

    Time is the process's CPU time. The first `fit` call also traces the step function;
    it is counted as taking as long as the second call, so tracing (which differs widely
    between learners) uses no budget.

    Returns:
        `(counted, tracing, wall)`: the training CPU seconds counted against the budget,
        the first call's excess over the second (tracing), not counted, and the wall-clock
        seconds of all calls.
    """
    times = []
    counted = 0.0
    wall = time.perf_counter()
    while counted < seconds:
        if on_chunk is not None:
            on_chunk(counted / seconds)
        start = time.process_time()
        learner.fit(tasks, meta_batch_size=args.meta_batch_size, epochs=1,
                    steps_per_epoch=args.chunk, seed=args.seed, verbose=0)
        times.append(time.process_time() - start)
        counted = sum(times[1:]) + times[min(1, len(times) - 1)]
    return counted, times[0] - times[min(1, len(times) - 1)], time.perf_counter() - wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20], choices=sorted(PAPER))
    parser.add_argument("--seconds", type=float, nargs="+", default=[90.0, 120.0],
                        help="training budget per learner in CPU seconds, one per --ways entry")
    parser.add_argument("--learners", nargs="+", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--chunk", type=int, default=10,
                        help="meta-steps per fit call (MAML++'s schedule epoch)")
    parser.add_argument("--msl-chunks", type=int, default=3,
                        help="chunks over which MAML++'s multi-step loss anneals")
    parser.add_argument("--meta-batch-size", type=int, default=8)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=400)
    parser.add_argument("--meta-lstm-steps", type=int, default=5,
                        help="MetaLSTM's inner steps in training and test")
    parser.add_argument("--mann-memory", type=int, nargs=2, default=[128, 40],
                        metavar=("SLOTS", "SIZE"), help="MANN's memory (default: the paper's)")
    parser.add_argument("--mann-units", type=int, default=200, help="MANN's LSTM units")
    parser.add_argument("--mann-read-heads", type=int, default=4)
    parser.add_argument("--mann-lr", type=float, default=OUTER_LR, help="MANN's Adam rate")
    parser.add_argument("--snail-head", choices=sorted(SNAIL_HEADS), default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if len(args.seconds) != len(args.ways):
        parser.error(f"Expected one --seconds per --ways entry. Received: "
                     f"ways={args.ways}, seconds={args.seconds}")

    rows = []
    for ways, seconds in zip(args.ways, args.seconds):
        data, train, test = episodes(ways, args.queries)
        for name in args.learners:
            learner, steps, on_chunk = build(name, ways, data.image_shape, args)
            trained, tracing, wall = train_for(learner, train, seconds, args, on_chunk)
            start = time.process_time()
            result, evaluated = held_out(learner, test, steps, args.eval_tasks)
            row = dict(learner=name, ways=ways, budget=seconds, train_seconds=trained,
                       tracing_seconds=tracing, train_wall_seconds=wall,
                       eval_seconds=time.process_time() - start,
                       meta_steps=int(learner.task_step.numpy()), test_steps=steps[0],
                       tasks=evaluated, accuracy=result[steps[0]]["accuracy"],
                       ci95=result[steps[0]]["accuracy_ci95"])
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\nglyphs 1-shot, {args.queries} queries, conv4/{args.filters}, meta-batch "
          f"{args.meta_batch_size}, chunks of {args.chunk} meta-steps; times in CPU "
          f"seconds except wall\n")
    print("| task | learner | budget | train CPU s | tracing CPU s | train wall s | meta-steps "
          "| test steps | eval CPU s | glyphs accuracy (95% CI) | paper |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['ways']}-way 1-shot | {NAMES[r['learner']]} | {r['budget']:.0f} CPU-s "
              f"| {r['train_seconds']:.0f} | {r['tracing_seconds']:.0f} "
              f"| {r['train_wall_seconds']:.0f} | {r['meta_steps']} | {r['test_steps']} "
              f"| {r['eval_seconds']:.0f} | {r['accuracy']:.3f} ± {r['ci95']:.3f} "
              f"({r['tasks']} tasks) | {paper_figure(r['learner'], r['ways'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
