"""A KerasTuner `HyperModel` around any keras_meta learner, scored after adaptation."""

import inspect

import keras
import keras_tuner as kt

from keras_meta._validation import check_positive_int, check_seed, check_steps

# Where the RL learner behind a `training_state` is kept (set with object.__setattr__, so
# Keras does not track the learner as a sub-object of the model it saves).
_LEARNER_ATTR = "_keras_meta_learner"

# Objective directions KerasTuner cannot infer from a metric name.
_DIRECTIONS = {"loss": "min", "mse": "min", "mae": "min", "accuracy": "max", "return": "max"}


def _is_learner(obj):
    # Every keras_meta learner hands the evaluation harness a probe (supervised and RL).
    return callable(getattr(obj, "evaluation_probe", None))


def _keras_model(learner):
    """The Keras model KerasTuner builds, checkpoints and reloads for `learner`.

    A supervised learner is itself a `keras.Model`. An RL learner is not; its
    `training_state` is what its `fit` callbacks see as `self.model`, and its weights (the
    policy, the optimizer's slots, the iteration counter) are what a checkpoint restores.
    """
    if not _is_learner(learner):
        raise TypeError(
            "Expected `build_learner(hp)` to return a keras_meta learner (e.g. km.MAML, "
            "km.ProtoNet, km.rl.MAMLRL, km.rl.RL2). Received: an object of type "
            f"{type(learner).__name__}")
    if isinstance(learner, keras.Model):
        optimizer = getattr(learner, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # KerasTuner reloads a checkpoint (best model, Hyperband's continued trials)
            # into a freshly built learner: unbuilt, the optimizer's slots would be skipped.
            # Built as `fit` builds them, in the order a checkpoint stores them.
            with learner.distribute_strategy.scope():
                optimizer.build(learner.trainable_variables)
        return learner
    state = getattr(learner, "training_state", None)
    if not isinstance(state, keras.Model):
        raise TypeError(
            "Expected `build_learner(hp)` to return a keras.Model learner or an RL learner "
            "with a `training_state` model. Received: an object of type "
            f"{type(learner).__name__}")
    object.__setattr__(state, _LEARNER_ATTR, learner)
    return state


def learner_of(model):
    """The keras_meta learner behind a model that a KerasTuner tuner returns.

    Supervised learners are their own models; for RL learners KerasTuner handles the
    learner's `training_state`, and this returns the learner around it.

    Args:
        model: A model from `tuner.get_best_models()`, `tuner.load_model(trial)` or
            `MetaHyperModel.build(hp)`.

    Returns:
        The learner (e.g. a `km.MAML` or a `km.rl.MAMLRL`).

    Raises:
        TypeError: If `model` did not come from a `MetaHyperModel`.

    Example:

    ```python
    learner = km.tuning.learner_of(tuner.get_best_models(1)[0])
    ```
    """
    learner = getattr(model, _LEARNER_ATTR, model)
    if not _is_learner(learner):
        raise TypeError(
            "Expected a model built by a keras_meta.tuning.MetaHyperModel. Received: model "
            f"of type {type(model).__name__}")
    return learner


class AdaptedValidation(keras.callbacks.Callback):
    """Adds a learner's post-adaptation validation performance to every epoch's logs.

    At the end of each epoch it adapts to the held-out tasks with `steps` adaptation steps
    (the learner's own evaluation: `evaluate(tasks, steps=[steps])` for supervised
    learners, `meta_evaluate` for RL learners, through `learner.evaluation_probe`) and
    writes `val_adapted_<metric>` (e.g. `val_adapted_loss`, `val_adapted_accuracy`,
    `val_adapted_return`) into the logs, where the callbacks after it (KerasTuner's
    trial reporting and checkpointing, `History`, `EarlyStopping`) see them. The tasks and
    the sampling seed are the same every epoch and every trial.

    Args:
        learner: A keras_meta learner.
        validation_tasks: Held-out tasks: a `TaskDistribution` for supervised learners, a
            list of tasks (`env.sample_tasks(n, seed)`) for RL learners.
        steps: Adaptation steps evaluated (inner steps; for RL² the episode index within
            a trial). Defaults to the learner's training budget (e.g. `inner_steps`).
        seed: Seed of the evaluated tasks and sampling.
        meta_batch_size, num_batches: Supervised: `meta_batch_size * num_batches` tasks.
        episodes: MAML-RL: episodes per adaptation step.

    Raises:
        TypeError, ValueError: On a bad argument.
    """

    def __init__(self, learner, validation_tasks, steps=None, seed=0, meta_batch_size=25, num_batches=4,
                 episodes=10):
        super().__init__()
        if not _is_learner(learner):
            raise TypeError("Expected `learner` to be a keras_meta learner. Received: learner of type "
                            f"{type(learner).__name__}")
        if validation_tasks is None:
            raise ValueError("Expected held-out `validation_tasks`. Received: validation_tasks=None")
        self.learner = learner
        self.validation_tasks = validation_tasks
        self.steps = None if steps is None else check_steps(steps, "steps", allow_zero=True)
        self.seed = check_seed(seed)
        self._options = dict(
            meta_batch_size=check_positive_int(meta_batch_size, "meta_batch_size"),
            num_batches=check_positive_int(num_batches, "num_batches"),
            episodes=check_positive_int(episodes, "episodes"), inner_lr=None, inner_lrs=None,
            task_factory=None, env=getattr(learner, "env", None), num_tasks=1, compute_meta_batch_size=1)

    def evaluate(self):
        """`{metric: value}` after `steps` adaptation steps on the validation tasks."""
        probe = self.learner.evaluation_probe(self._options)
        steps = probe.train_budget() if self.steps is None else self.steps
        return {k: float(v) for k, v in probe.curve(self.validation_tasks, [steps], self.seed)[steps].items()}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({f"val_adapted_{k}": v for k, v in self.evaluate().items()})


class MetaHyperModel(kt.HyperModel):
    """A KerasTuner `HyperModel` that builds a meta-learner and scores it after adaptation.

    `build(hp)` calls `build_learner(hp)`, a function of KerasTuner hyperparameters that
    returns a keras_meta learner ready to `fit` (supervised learners compiled): the search
    space is whatever it asks `hp` for (layers, units, inner/outer learning rates, inner
    steps, RL's gamma...). `fit(hp, model, *args, **kwargs)` meta-trains with the
    learner's own `fit` (the arguments of `tuner.search`) and, through an
    `AdaptedValidation` callback, reports the post-adaptation validation performance every
    epoch as `val_adapted_<metric>`; `objective` is the `keras_tuner.Objective` to give the
    tuner. Any KerasTuner tuner runs it, in its distributed chief/worker mode too; KerasTuner
    does the search, checkpointing and reloading.

    For RL learners (not Keras models themselves) KerasTuner builds, checkpoints and
    reloads the learner's `training_state`; `learner_of(model)` returns the learner.

    Args:
        build_learner: `build_learner(hp) -> learner`.
        validation_tasks: Held-out tasks (see `AdaptedValidation`).
        metric: The metric to optimise: `"loss"` (supervised default), a compiled query
            metric (`"accuracy"`) or `"return"` (RL learners).
        direction: `"min"` or `"max"`; inferred for loss, mse, mae, accuracy and return.
        eval_steps: Adaptation steps the objective is measured at; the same for every
            trial when the search varies `inner_steps`. Defaults to each learner's
            training budget.
        eval_seed, meta_batch_size, num_batches, episodes: See `AdaptedValidation`.
        name, tunable: Passed to `keras_tuner.HyperModel`.

    Raises:
        TypeError, ValueError: On a bad argument.

    Example:

    ```python
    import keras, keras_tuner as kt, keras_meta as km

    def build_learner(hp):
        units, depth = hp.Int("units", 16, 64, step=16), hp.Int("layers", 1, 3)
        model = keras.Sequential([keras.Input((1,))]
                                 + [keras.layers.Dense(units, activation="relu") for _ in range(depth)]
                                 + [keras.layers.Dense(1)])
        maml = km.MAML(model, inner_lr=hp.Float("inner_lr", 1e-3, 0.1, sampling="log"),
                       inner_steps=hp.Int("inner_steps", 1, 3))
        maml.compile(keras.optimizers.Adam(hp.Float("outer_lr", 1e-4, 1e-2, sampling="log")))
        return maml

    hypermodel = km.tuning.MetaHyperModel(
        build_learner, km.tasks.Sinusoid(shots=5, queries=10, split="test"), eval_steps=5)
    tuner = kt.Hyperband(hypermodel, objective=hypermodel.objective, max_epochs=9,
                         directory="tuning", project_name="sinusoid")
    tuner.search(km.tasks.Sinusoid(shots=5, queries=10), meta_batch_size=25, steps_per_epoch=100)
    best = tuner.get_best_models(1)[0]          # the reloaded learner of the best trial
    ```
    """

    def __init__(self, build_learner, validation_tasks, metric="loss", direction=None, eval_steps=None,
                 eval_seed=0, meta_batch_size=25, num_batches=4, episodes=10, name=None, tunable=True):
        if not callable(build_learner):
            raise TypeError("Expected `build_learner` to be a function of the hyperparameters. Received: "
                            f"build_learner={build_learner!r}")
        if not isinstance(metric, str) or not metric:
            raise TypeError(f"Expected `metric` to be a metric name. Received: metric={metric!r}")
        direction = _DIRECTIONS.get(metric) if direction is None else direction
        if direction not in ("min", "max"):
            raise ValueError(f"Expected `direction` to be 'min' or 'max' (it cannot be inferred for "
                             f"metric={metric!r}). Received: direction={direction!r}")
        if validation_tasks is None:
            raise ValueError("Expected held-out `validation_tasks`. Received: validation_tasks=None")
        self._validation = dict(
            validation_tasks=validation_tasks,
            steps=None if eval_steps is None else check_steps(eval_steps, "eval_steps", allow_zero=True),
            seed=check_seed(eval_seed, "eval_seed"),
            meta_batch_size=check_positive_int(meta_batch_size, "meta_batch_size"),
            num_batches=check_positive_int(num_batches, "num_batches"),
            episodes=check_positive_int(episodes, "episodes"))
        super().__init__(name=name, tunable=tunable)
        self.build_learner = build_learner
        self.objective = kt.Objective(f"val_adapted_{metric}", direction)

    def build(self, hp):
        """The Keras model of `build_learner(hp)`'s learner (see the class docstring)."""
        return _keras_model(self.build_learner(hp))

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """Meta-trains the learner of `model`, reporting `val_adapted_<metric>` every epoch.

        Args:
            hp: The trial's hyperparameters.
            model: What `build(hp)` returned.
            *args, **kwargs: The learner's `fit` arguments (those of `tuner.search`).
            callbacks: Keras callbacks (KerasTuner's own among them).

        Returns:
            The learner's `History`, its epochs' logs holding the objective.
        """
        learner = learner_of(model)
        # First, so that KerasTuner's reporting and checkpointing callbacks see the metric.
        callbacks = [AdaptedValidation(learner, **self._validation), *(callbacks or [])]
        if "initial_epoch" in kwargs and "initial_epoch" not in inspect.signature(learner.fit).parameters:
            # Hyperband continues a trial from its parent's checkpoint (already loaded) and
            # asks for epochs [initial_epoch, epochs); an RL learner's fit counts from 0.
            kwargs["epochs"] = max(1, kwargs.get("epochs", 1) - kwargs.pop("initial_epoch"))
        return learner.fit(*args, callbacks=callbacks, **kwargs)
