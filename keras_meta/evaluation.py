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
import statistics
import sys
import time
import tracemalloc

import numpy as np

from keras_meta.tasks import TaskBatch, TaskDistribution

__all__ = ["Report", "SupportSubset", "confidence_interval", "evaluate", "t_quantile"]


# --------------------------------------------------------------------------- statistics
def _betacf(a, b, x):
    # Lentz's continued fraction for the regularized incomplete beta (Numerical Recipes 6.4).
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a, b, x, y):
    # Regularized I_x(a, b) given x and y = 1 - x separately, so y keeps full precision when
    # x rounds to 1 (the t CDF near 0 depends on y = t^2 / (df + t^2) alone).
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _t_cdf(t, df):
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """Quantile of Student's t distribution with `df` degrees of freedom (bisection on the CDF).

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom (> 0).

    Returns:
        `t` with `P(T <= t) = p`, to about 1e-12.
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"Expected 0 < p < 1 and df > 0. Received: p={p!r}, df={df!r}")
    lo, hi = -1.0, 1.0
    while _t_cdf(lo, df) > p:
        lo *= 2.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def confidence_interval(values, level=0.95):
    """Mean and half-width of a two-sided Student-t confidence interval.

    `half_width = t_{(1 + level) / 2, n - 1} * s / sqrt(n)` with `s` the sample standard
    deviation (`n - 1` denominator). The t-distribution (not the normal) is used because
    the harness averages over a handful of seeds. With one value the half-width is NaN.

    Args:
        values: Finite numbers (at least one).
        level: Confidence level in (0, 1).

    Returns:
        `(mean, half_width)` as floats.

    Raises:
        ValueError: For an empty input, non-finite values or a level outside (0, 1).

    Example:

    >>> mean, half = confidence_interval([1, 2, 3, 4, 5])
    >>> round(mean, 4), round(half, 4)   # 2.776445 * sqrt(2.5) / sqrt(5)
    (3.0, 1.9632)
    """
    data = np.asarray(values, np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("Expected at least one value. Received: values=[]")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"Expected finite values. Received: values={data.tolist()!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected `level` in (0, 1). Received: level={level!r}")
    mean = float(data.mean())
    if data.size == 1:
        return mean, float("nan")
    sd = float(data.std(ddof=1))
    return mean, t_quantile(0.5 + level / 2.0, data.size - 1) * sd / math.sqrt(data.size)


# --------------------------------------------------------------------------- task helpers
class SupportSubset(TaskDistribution):
    """A task family whose support sets keep only `shots` examples (per class for labels).

    With integer support labels (classification) it keeps the first `shots` support
    examples of every class present; otherwise (regression) the first `shots` examples.
    Query sets are unchanged, so performance differences come from the support size.

    Args:
        tasks: The base `TaskDistribution`.
        shots: Support examples to keep (per class for classification).

    Raises:
        ValueError: If a task has fewer than `shots` support examples (per class).
    """

    def __init__(self, tasks, shots):
        if not isinstance(tasks, TaskDistribution):
            raise TypeError(f"Expected a keras_meta.tasks.TaskDistribution. Received: tasks of type "
                            f"{type(tasks).__name__}")
        if int(shots) != shots or shots < 1:
            raise ValueError(f"Expected `shots` to be a positive integer. Received: shots={shots!r}")
        self.tasks, self.shots = tasks, int(shots)

    @property
    def loss(self):
        return getattr(self.tasks, "loss", None)

    @property
    def metrics(self):
        return getattr(self.tasks, "metrics", ())

    def sample(self, meta_batch_size, seed):
        batch = TaskBatch(*(np.asarray(v) for v in self.tasks.sample(meta_batch_size, seed)))
        sy = batch.support_y
        if sy.dtype.kind in "iu" and sy.ndim == 2:
            keep = []
            for labels in sy:
                idx = np.concatenate([np.flatnonzero(labels == c)[:self.shots] for c in np.unique(labels)])
                if any((labels == c).sum() < self.shots for c in np.unique(labels)):
                    raise ValueError(f"Expected at least {self.shots} support examples per class. Received: "
                                     f"shots={self.shots} with class counts {np.bincount(labels).tolist()}")
                keep.append(np.sort(idx))
            keep = np.stack(keep)
            take = lambda a: np.take_along_axis(a, keep.reshape(keep.shape + (1,) * (a.ndim - 2)), axis=1)
            return TaskBatch(take(batch.support_x), take(sy), batch.query_x, batch.query_y)
        if sy.shape[1] < self.shots:
            raise ValueError(f"Expected at least {self.shots} support examples. Received: shots={self.shots} "
                             f"with support_y.shape={sy.shape}")
        return TaskBatch(batch.support_x[:, :self.shots], sy[:, :self.shots], batch.query_x, batch.query_y)


# --------------------------------------------------------------------------- learner probes
def _snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def _restore(variables, values):
    for v, value in zip(variables, values):
        v.assign(value)


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


def _timed(fn, repeats):
    fn()  # first call traces the tf.functions
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _memory_of(fn):
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


class _SupervisedProbe:
    kind = "supervised"
    budget_name = "inner steps"
    shots_name = "shots"
    higher_is_better = False

    def __init__(self, learner, options):
        self.learner, self.options = learner, options

    def default_budgets(self):
        return sorted({0, 1, int(self.learner.inner_steps), 5, 10})

    def train_budget(self):
        return int(self.learner.inner_steps)

    def curve(self, tasks, budgets, seed):
        o = self.options
        result = self.learner.evaluate(tasks, steps=list(budgets), meta_batch_size=o["meta_batch_size"],
                                       num_batches=o["num_batches"], seed=seed, inner_lr=o["inner_lr"])
        return {b: {k: v for k, v in row.items() if not k.endswith("_ci95")} for b, row in result.items()}

    def shot_curve(self, tasks, shots, seed):
        factory = self.options["task_factory"]
        out = {}
        for k in shots:
            family = factory(k) if factory is not None else SupportSubset(tasks, k)
            out[k] = self.curve(family, [self.train_budget()], seed)[self.train_budget()]
        return out

    def generalization(self, train_tasks, tasks, seed):
        if train_tasks is None:
            return None
        b = self.train_budget()
        return {"meta-train": self.curve(train_tasks, [b], seed)[b], "meta-test": self.curve(tasks, [b], seed)[b]}

    def compute(self, tasks, steps):
        learner, o = self.learner, self.options
        batch = TaskBatch(*(np.asarray(v) for v in tasks.sample(1, 987_654)))
        adapt = lambda: learner.adapt(batch.support_x[0], batch.support_y[0], inner_lr=o["inner_lr"])
        out = {"adaptation_latency_ms": 1e3 * _timed(adapt, 5), "adaptation_python_peak_mb": _memory_of(adapt)}
        if getattr(learner, "optimizer", None) is not None and steps > 0:
            variables = list(learner.variables)
            opt_variables = list(learner.optimizer.variables)
            saved, saved_opt = _snapshot(variables), _snapshot(opt_variables)
            run = lambda n: learner.fit(tasks, meta_batch_size=o["meta_batch_size"], epochs=1,
                                        steps_per_epoch=n, verbose=0, seed=424_242)
            try:
                run(1)
                start = time.perf_counter()
                run(steps)
                out["meta_steps_per_second"] = steps / (time.perf_counter() - start)
            finally:
                _restore(variables, saved)
                _restore(opt_variables, saved_opt)
        return out


class _RLProbe:
    higher_is_better = True

    def __init__(self, learner, options):
        self.learner, self.options = learner, options
        self.env = options["env"]

    def tasks_for(self, seed, train=False):
        n = self.options["num_tasks"]
        if train:
            # The tasks the learner met during meta-training (its fit draws them from this stream).
            learner = self.learner
            tasks = []
            for i in range(max(learner._iteration, 1)):
                tasks += learner._iteration_tasks(i, n)
                if len(tasks) >= n:
                    break
            rng = np.random.default_rng(seed)
            return [tasks[i] for i in rng.choice(len(tasks), n, replace=len(tasks) < n)]
        return self.env.sample_tasks(n, seed=1_000_003 + seed)

    def generalization(self, train_tasks, tasks, seed):
        b = self.train_budget()
        test = self.curve(tasks, [b], seed)[b]
        train = self.curve(self.tasks_for(seed, train=True) if train_tasks is None else train_tasks, [b], seed)[b]
        return {"meta-train": train, "meta-test": test}

    def _timed_train_step(self, steps):
        learner = self.learner
        variables = list(learner.policy.variables)
        optimizer = getattr(learner, "optimizer", None)
        opt_variables = list(optimizer.variables) if optimizer is not None else []
        saved, saved_opt, iteration = _snapshot(variables), _snapshot(opt_variables), learner._iteration
        tasks = learner.env.sample_tasks(self.options["compute_meta_batch_size"], seed=55_555)
        try:
            self.train_step(tasks)
            start = time.perf_counter()
            for _ in range(steps):
                self.train_step(tasks)
            return steps / (time.perf_counter() - start)
        finally:
            _restore(variables, saved)
            _restore(list(optimizer.variables) if optimizer is not None else [], saved_opt)
            learner._iteration = iteration

    def compute(self, tasks, steps):
        task = self.env.sample_tasks(1, seed=777)
        adapt = lambda: self.adapt_once(task)
        out = {"adaptation_latency_ms": 1e3 * _timed(adapt, 3), "adaptation_python_peak_mb": _memory_of(adapt)}
        if steps > 0:
            out["meta_steps_per_second"] = self._timed_train_step(steps)
        return out


class _MAMLRLProbe(_RLProbe):
    kind = "maml-rl"
    budget_name = "inner steps"
    shots_name = "episodes per inner step"

    def default_budgets(self):
        return [0, 1, 2, 3]

    def train_budget(self):
        return int(self.learner.inner_steps)

    def curve(self, tasks, budgets, seed, episodes=None):
        result = self.learner.meta_evaluate(tasks, steps=list(budgets), episodes=episodes or self.options["episodes"],
                                            seed=seed, inner_lrs=self.options["inner_lrs"])
        return {b: {"return": v} for b, v in result.items()}

    def shot_curve(self, tasks, shots, seed):
        return {k: self.curve(tasks, [1], seed, episodes=int(k))[1] for k in shots}

    def train_step(self, tasks):
        self.learner.train_step(tasks, self.options["episodes"])

    def adapt_once(self, task):
        self.learner.adapt(task=task[0], episodes=self.options["episodes"], steps=1)


class _RL2Probe(_RLProbe):
    kind = "rl2"
    budget_name = "adaptation episodes"
    shots_name = "adaptation episodes"

    def default_budgets(self):
        return list(range(self.learner.episodes_per_trial))

    def train_budget(self):
        return self.learner.episodes_per_trial - 1

    def curve(self, tasks, budgets, seed):
        ept = max(self.learner.episodes_per_trial, max(budgets) + 1)
        result = self.learner.meta_evaluate(tasks, episodes=list(budgets), seed=seed, episodes_per_trial=ept)
        return {b: {"return": v} for b, v in result.items()}

    def shot_curve(self, tasks, shots, seed):
        curve = self.curve(tasks, list(shots), seed)
        return {k: curve[k] for k in shots}

    def train_step(self, tasks):
        self.learner.train_step(tasks)

    def adapt_once(self, task):
        self.learner.collect(task, 1, seed=1)


def _probe(learner, options):
    from keras_meta.algorithms import MetaLearner
    from keras_meta.rl import MAMLRL, RL2

    if isinstance(learner, MetaLearner):
        return _SupervisedProbe(learner, options)
    if isinstance(learner, MAMLRL):
        return _MAMLRLProbe(learner, options)
    if isinstance(learner, RL2):
        return _RL2Probe(learner, options)
    raise TypeError(
        "Expected `learner` to be a keras_meta.MetaLearner (MAML, FOMAML, Reptile, MetaSGD, ANIL), "
        "keras_meta.rl.MAMLRL or keras_meta.rl.RL2. Received: "
        f"learner={learner!r:.80} of type {type(learner).__name__}")


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
