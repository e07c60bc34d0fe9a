"""Evaluation probes: what the harness asks of each kind of learner.

A learner hands the harness its probe through `learner.evaluation_probe(options)`, so the
harness never switches on learner types.
"""

import statistics
import time
import tracemalloc

import numpy as np

from keras_meta.tasks import TaskBatch, TaskDistribution


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


class SupervisedProbe:
    kind = "supervised"
    budget_name = "inner steps"
    shots_name = "shots"
    higher_is_better = False

    def __init__(self, learner, options):
        self.learner, self.options = learner, options

    def default_budgets(self):
        return sorted({0, 1, int(self.learner.default_adapt_steps), 5, 10})

    def train_budget(self):
        return int(self.learner.default_adapt_steps)

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
            # Keras runs `steps_per_execution` meta-steps a call: time whole executions and
            # count the meta-steps the learner actually took.
            execution = int(getattr(learner, "steps_per_execution", 1) or 1)
            run = lambda n: learner.fit(tasks, meta_batch_size=o["meta_batch_size"], epochs=1,
                                        steps_per_epoch=-(-n // execution) * execution,
                                        verbose=0, seed=424_242)
            try:
                run(1)
                first = int(learner.task_step.numpy())
                start = time.perf_counter()
                run(steps)
                seconds = time.perf_counter() - start
                out["meta_steps_per_second"] = (int(learner.task_step.numpy()) - first) / seconds
            finally:
                _restore(variables, saved)
                _restore(opt_variables, saved_opt)
        return out


class RLProbe:
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
            for i in range(max(learner.iteration, 1)):
                tasks += learner.iteration_tasks(i, n)
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
        saved, saved_opt, iteration = _snapshot(variables), _snapshot(opt_variables), learner.iteration
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
            learner.iteration = iteration

    def compute(self, tasks, steps):
        task = self.env.sample_tasks(1, seed=777)
        adapt = lambda: self.adapt_once(task)
        out = {"adaptation_latency_ms": 1e3 * _timed(adapt, 3), "adaptation_python_peak_mb": _memory_of(adapt)}
        if steps > 0:
            out["meta_steps_per_second"] = self._timed_train_step(steps)
        return out


class MAMLRLProbe(RLProbe):
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


class RL2Probe(RLProbe):
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
