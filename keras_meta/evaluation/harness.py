"""One evaluation harness for supervised and RL meta-learners.

`evaluate(learner, tasks, ...)` measures, over several seeds,

- learning speed: performance after each adaptation budget (inner steps for supervised
  learners and MAML-RL; adaptation episodes, i.e. the k-th episode of a trial, for RL²);
- sample efficiency: performance against the amount of adaptation data (shots for
  supervised learners, built with a `task_factory(shots)` or by subsetting the support
  set; episodes per inner step for MAML-RL; adaptation episodes for RL²);
- generalization: meta-train tasks versus meta-test tasks at the training budget;
- compute cost: meta-steps per second, adaptation latency and peak memory.

Every number is the mean over seeds of a per-seed mean with a 95% confidence interval
from `confidence_interval` (Student's t with `n - 1` degrees of freedom, over the seeds).
`Report.save(folder)` writes `report.md`, `results.csv`, `results.json` and PNG plots.

Example:

```python
report = km.evaluation.evaluate(
    maml, km.tasks.Sinusoid(shots=10, queries=100, split="test"),
    train_tasks=km.tasks.Sinusoid(shots=10, queries=100, split="train"),
    budgets=[0, 1, 5, 10], shots=[2, 5, 10], seeds=[0, 1, 2], report_dir="runs/eval")
print(report.to_markdown())
```
"""

import csv
import io
import json
import math
import pathlib
import resource
import sys

import numpy as np

from keras_meta.evaluation.probes import SupportSubset
from keras_meta.evaluation.stats import confidence_interval, t_quantile
from keras_meta.tasks import TaskDistribution

__all__ = ["Report", "SupportSubset", "confidence_interval", "evaluate", "t_quantile"]


# --------------------------------------------------------------------------- memory
def _peak_rss_mb():
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    scale = 1.0 / 1024.0 if sys.platform != "darwin" else 1.0 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _accelerator_peak_mb():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return None
    try:
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    except (ValueError, RuntimeError):
        return None


def _probe(learner, options):
    """The learner's own evaluation probe (`learner.evaluation_probe(options)`)."""
    make = getattr(learner, "evaluation_probe", None)
    if make is None:
        raise TypeError(
            "Expected `learner` to be a keras_meta learner with an `evaluation_probe` method "
            "(a MetaTrainer such as MAML, ProtoNet or Reptile, keras_meta.rl.MAMLRL or "
            f"keras_meta.rl.RL2). Received: learner={learner!r:.80} of type "
            f"{type(learner).__name__}")
    return make(options)


# --------------------------------------------------------------------------- report
class Report:
    """Results of `evaluate`: rows of (section, x, metric, mean, ci95, values).

    Attributes:
        rows: A list of dicts with keys `section` ("learning_speed", "sample_efficiency",
            "generalization", "compute"), `x` (budget, shots, split or quantity),
            `metric`, `mean`, `ci95` (half-width) and `values` (one per seed).
        meta: Learner kind, axis names, seeds and settings.
    """

    def __init__(self, rows, meta):
        self.rows, self.meta = rows, meta

    def section(self, name):
        """Rows of one section."""
        return [r for r in self.rows if r["section"] == name]

    def to_markdown(self):
        """The tables as GitHub markdown."""
        out = io.StringIO()
        out.write(f"# Evaluation of {self.meta['learner']} ({self.meta['kind']})\n\n")
        out.write(f"Seeds: {self.meta['seeds']}. Means over seeds with 95% Student-t confidence intervals.\n")
        axes = {"learning_speed": self.meta["budget_name"], "sample_efficiency": self.meta["shots_name"],
                "generalization": "tasks", "compute": "quantity"}
        for section in ("learning_speed", "sample_efficiency", "generalization", "compute"):
            rows = self.section(section)
            if not rows:
                continue
            out.write(f"\n## {section.replace('_', ' ')}\n\n| {axes[section]} | metric | mean | ±95% CI | n |\n"
                      "|---|---|---|---|---|\n")
            for r in rows:
                ci = "n/a" if r["ci95"] is None or math.isnan(r["ci95"]) else f"{r['ci95']:.4g}"
                out.write(f"| {r['x']} | {r['metric']} | {r['mean']:.4g} | {ci} | {len(r['values'])} |\n")
        return out.getvalue()

    def to_csv(self):
        """The rows as CSV text (values joined by `;`)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["section", "x", "metric", "mean", "ci95", "n", "values"])
        for r in self.rows:
            writer.writerow([r["section"], r["x"], r["metric"], r["mean"], r["ci95"], len(r["values"]),
                             ";".join(f"{v:.6g}" for v in r["values"])])
        return out.getvalue()

    def save(self, report_dir):
        """Writes report.md, results.csv, results.json and PNG plots; returns the folder."""
        folder = pathlib.Path(report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.to_markdown())
        (folder / "results.csv").write_text(self.to_csv())
        (folder / "results.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1,
                                                        default=float))
        self._plots(folder)
        return folder

    def _plots(self, folder):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for section, xlabel in (("learning_speed", self.meta["budget_name"]),
                                ("sample_efficiency", self.meta["shots_name"])):
            rows = self.section(section)
            if not rows:
                continue
            metrics = sorted({r["metric"] for r in rows})
            fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
            for ax, metric in zip(axes[0], metrics):
                sel = [r for r in rows if r["metric"] == metric]
                ci = [0.0 if r["ci95"] is None or math.isnan(r["ci95"]) else r["ci95"] for r in sel]
                ax.errorbar([r["x"] for r in sel], [r["mean"] for r in sel], yerr=ci, marker="o", capsize=3)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(metric)
                ax.set_title(f"{section.replace('_', ' ')} (95% CI)")
            fig.tight_layout()
            fig.savefig(folder / f"{section}.png", dpi=100)
            plt.close(fig)
        rows = self.section("generalization")
        if rows:
            metrics = sorted({r["metric"] for r in rows})
            fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
            for ax, metric in zip(axes[0], metrics):
                sel = [r for r in rows if r["metric"] == metric]
                ci = [0.0 if math.isnan(r["ci95"]) else r["ci95"] for r in sel]
                ax.bar([r["x"] for r in sel], [r["mean"] for r in sel], yerr=ci, capsize=4)
                ax.set_ylabel(metric)
                ax.set_title("generalization gap")
            fig.tight_layout()
            fig.savefig(folder / "generalization.png", dpi=100)
            plt.close(fig)


def _rows(section, per_seed, level):
    """per_seed: list (seeds) of {x: {metric: value}} -> rows with CIs over seeds."""
    rows = []
    for x in per_seed[0]:
        for metric in per_seed[0][x]:
            values = [float(s[x][metric]) for s in per_seed]
            mean, half = confidence_interval(values, level)
            rows.append({"section": section, "x": x, "metric": metric, "mean": mean, "ci95": half,
                         "values": values})
    return rows


def evaluate(learner, tasks, *, train_tasks=None, budgets=None, shots=None, task_factory=None, seeds=(0, 1, 2),
             level=0.95, meta_batch_size=25, num_batches=4, inner_lr=None, num_tasks=20, episodes=10,
             inner_lrs=None, compute=True, compute_steps=3, report_dir=None):
    """Evaluates a meta-learner: learning speed, sample efficiency, generalization, compute.

    Args:
        learner: A `keras_meta.MetaLearner` (MAML, FOMAML, Reptile, MetaSGD, ANIL), a
            `keras_meta.rl.MAMLRL` or a `keras_meta.rl.RL2`.
        tasks: Meta-test tasks: a `TaskDistribution` (supervised) or a task environment
            (RL; `num_tasks` tasks per seed are drawn with `sample_tasks`).
        train_tasks: Meta-train tasks for the generalization gap: a `TaskDistribution`
            (supervised; skipped when None), or a list of tasks (RL; default: tasks
            re-drawn from the learner's own training stream).
        budgets: Adaptation budgets for learning speed (inner steps, or for RL² the
            episode index within a trial); defaults per learner.
        shots: Sample-efficiency axis: support shots (supervised; skipped when None),
            episodes per inner step (MAML-RL) or adaptation episodes (RL²).
        task_factory: Supervised only: `task_factory(shots) -> TaskDistribution` for the
            sample-efficiency families; default: `SupportSubset(tasks, shots)`.
        seeds: Seeds; each gives an independent task sample and sampling noise.
        level: Confidence level of the intervals.
        meta_batch_size, num_batches, inner_lr: Supervised evaluation settings
            (`meta_batch_size * num_batches` tasks per seed).
        num_tasks: RL tasks per seed.
        episodes: MAML-RL episodes per inner step.
        inner_lrs: MAML-RL step size of each adaptation step (default: the learner's
            `inner_lr` for all; the MAML paper evaluates with `[alpha, alpha / 2, ...]`).
        compute: Measure compute cost (meta-steps/s on a few meta-steps whose weight and
            optimizer changes are undone; adaptation latency; peak memory).
        compute_steps: Meta-steps timed for meta-steps/s.
        report_dir: If given, `Report.save(report_dir)` is called.

    Returns:
        A `Report`.

    Raises:
        TypeError: For a learner type the harness does not know, or tasks of the wrong kind.
        ValueError: For fewer than one seed.
    """
    options = dict(meta_batch_size=int(meta_batch_size), num_batches=int(num_batches), inner_lr=inner_lr,
                   task_factory=task_factory, num_tasks=int(num_tasks), episodes=int(episodes), env=tasks,
                   inner_lrs=inner_lrs,
                   compute_meta_batch_size=min(int(num_tasks), 8))
    probe = _probe(learner, options)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("Expected at least one seed. Received: seeds=[]")
    if probe.kind == "supervised":
        if not isinstance(tasks, TaskDistribution):
            raise TypeError("Expected `tasks` to be a keras_meta.tasks.TaskDistribution for a supervised learner. "
                            f"Received: tasks of type {type(tasks).__name__}")
        draw = lambda seed: tasks
    else:
        from keras_meta.rl.envs import check_task_env

        check_task_env(tasks)
        draw = probe.tasks_for
    budgets = probe.default_budgets() if budgets is None else sorted(int(b) for b in budgets)
    rows = []
    rows += _rows("learning_speed", [probe.curve(draw(s), budgets, s) for s in seeds], level)
    if shots is not None:
        rows += _rows("sample_efficiency", [probe.shot_curve(draw(s), [int(k) for k in shots], s) for s in seeds],
                      level)
    if probe.kind != "supervised" or train_tasks is not None:
        per_seed = [probe.generalization(train_tasks, draw(s), s) for s in seeds]
        rows += _rows("generalization", per_seed, level)
        for metric in per_seed[0]["meta-test"]:
            gaps = [p["meta-train"][metric] - p["meta-test"][metric] for p in per_seed]
            mean, half = confidence_interval(gaps, level)
            rows.append({"section": "generalization", "x": "gap (train - test)", "metric": metric, "mean": mean,
                         "ci95": half, "values": gaps})
    if compute:
        measures = [probe.compute(draw(s), int(compute_steps)) for s in seeds]
        for key in measures[0]:
            values = [m[key] for m in measures]
            mean, half = confidence_interval(values, level)
            rows.append({"section": "compute", "x": key, "metric": key, "mean": mean, "ci95": half,
                         "values": values})
        rows.append({"section": "compute", "x": "peak_rss_mb", "metric": "peak_rss_mb", "mean": _peak_rss_mb(),
                     "ci95": float("nan"), "values": [_peak_rss_mb()]})
        accel = _accelerator_peak_mb()
        if accel is not None:
            rows.append({"section": "compute", "x": "accelerator_peak_mb", "metric": "accelerator_peak_mb",
                         "mean": accel, "ci95": float("nan"), "values": [accel]})
    meta = {"learner": type(learner).__name__, "kind": probe.kind, "seeds": seeds, "level": level,
            "budget_name": probe.budget_name, "shots_name": probe.shots_name,
            "higher_is_better": probe.higher_is_better}
    report = Report(rows, meta)
    if report_dir is not None:
        report.save(report_dir)
    return report
