"""`GradientLearner`: the learner protocol for the MAML family, on the shared inner loop.

MAML, FOMAML, ANIL, Meta-SGD, MAML++ and Reptile differ only in the inner update rule
(`update_rule`), which weights the inner loop adapts (`adapted_mask`), and how a task's
outputs become its contribution to the meta-step.
"""

import keras
import numpy as np

from keras_meta import _compat, inner
from keras_meta._validation import check_bool, check_learning_rate, check_steps
from keras_meta.inner import memory
from keras_meta.ops import forward, random_state, with_batch_statistics
from keras_meta.training import MetaTrainer, TaskOutputs


class GradientLearner(MetaTrainer):
    """A meta-learner whose adaptation is gradient steps at fast weights.

    For each task the inner loop (`keras_meta.inner.adapt`) takes `inner_steps` steps of
    `update_rule` on the support loss at fast weights (`model.stateless_call`, never
    variable assignment); the task's query loss at the adapted weights is what the outer
    loop differentiates (through the inner loop unless `first_order`).

    Args:
        model: A built Keras 3 model; its weights are the meta-weights.
        inner_lr: Inner-loop step size `alpha` (> 0).
        inner_steps: Inner-loop steps per task during meta-training (>= 1).
        first_order: If True, drop second-order terms of the meta-gradient.
        inner_rule: Optional `keras_meta.inner.LearnedRule` (e.g. one trained by
            `km.optimizers.meta_train`) replacing SGD in the inner loop; its update is
            multiplied by `inner_lr / self.inner_lr` (1 in training; `adapt(inner_lr=...)`
            rescales it). Its weights are meta-learned with the model's unless
            `inner_rule.trainable` is False. Only learners whose rule is plain SGD (MAML,
            FOMAML, ANIL, Reptile) take it.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: If `model` is not a Keras 3 model or a hyper-parameter has the wrong type.
        ValueError: If `model` is unbuilt, or `inner_lr`/`inner_steps` is not positive.
    """

    def __init__(self, model, inner_lr=0.01, inner_steps=1, first_order=False, inner_rule=None,
                 **kwargs):
        inner_lr = check_learning_rate(inner_lr)
        inner_steps = check_steps(inner_steps)
        first_order = check_bool(first_order, "first_order")
        if inner_rule is not None and not isinstance(inner_rule, inner.LearnedRule):
            raise TypeError("Expected `inner_rule` to be a keras_meta.inner.LearnedRule or None. "
                            f"Received: inner_rule of type {type(inner_rule).__name__}")
        if inner_rule is not None and type(self).update_rule is not GradientLearner.update_rule:
            raise TypeError(f"Expected no `inner_rule` for {type(self).__name__}, which learns "
                            "its own inner rule. Received: inner_rule={inner_rule!r}")
        super().__init__(model, **kwargs)
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.inner_rule = inner_rule

    # ----- what subclasses choose -----------------------------------------------------

    def update_rule(self, meta, inner_lr):
        """The inner `UpdateRule` given the meta-values and the step size (SGD by default).

        Args:
            meta: A `MetaState` (learned step sizes live in `meta.extras`).
            inner_lr: The step size: `self.inner_lr` in training, the `inner_lr` option of
                `adapt`/`evaluate` otherwise (a Python float or scalar tensor).
        """
        if self.inner_rule is None:
            return inner.sgd(inner_lr)
        weights = meta.extras if self.inner_rule.trainable else None
        return self.inner_rule.update_rule(weights, inner_lr / self.inner_lr)

    def extra_meta_variables(self):
        """The inner rule's weights when it is given and trainable (none otherwise)."""
        if self.inner_rule is None:
            return []
        return list(self.inner_rule.trainable_variables)

    def adapted_mask(self):
        """Which of `model.trainable_variables` the inner loop adapts (all by default)."""
        return [True] * len(self.model.trainable_variables)

    def step_weights(self, meta, weights, step):
        """The trainable values of the support pass at inner step `step` (`weights` by default).

        Args:
            meta: A `MetaState`.
            weights: Fast weights in the order of `model.trainable_variables`.
            step: The inner step's index (a Python int).
        """
        del meta, step
        return weights

    # ----- the inner loop -------------------------------------------------------------

    def adapt_task(self, meta, support_x, support_y, steps, inner_lr, first_order,
                   on_step=None, limit=None):
        """The model's fast weights after `steps` inner updates on one task's support set.

        The layers' random-seed states (Dropout, GaussianNoise) advance from step to step,
        so each inner step draws fresh randomness.

        Args:
            meta: A `MetaState`.
            support_x, support_y: The task's support set.
            steps: Inner steps (a Python int).
            inner_lr: Step size given to `update_rule`.
            first_order: Hold inner gradients constant for the outer tape.
            on_step: Optional `on_step(k, fast_weights)` at every step `k` (0 included).
            limit: Optional scalar int tensor: take only the first `limit` of the `steps`
                steps (`keras_meta.inner.adapt`).

        Returns:
            `inner.Adapted(params, state, carry)`: `params` in the order of
            `model.trainable_variables`, the rule's state, and as `carry` the model's
            non-trainables with the random-seed states the steps advanced.
        """
        mask = self.adapted_mask()
        seed_mask = self.seed_state_mask
        fixed = [None if m else v for v, m in zip(meta.params, mask)]

        def merge(adapted):
            it = iter(adapted)
            return [next(it) if f is None else f for f in fixed]

        def support_loss(adapted, step, seeds=None):
            non_trainables = meta.non_trainables if seeds is None else random_state.merge(
                meta.non_trainables, seed_mask, seeds)
            weights = self.step_weights(meta, merge(adapted), step)
            y, new_non_trainables = forward(self.model, weights, non_trainables, support_x,
                                            training=True)
            loss = self.task_loss(support_y, y)
            if seeds is None:
                return loss
            return loss, random_state.carried(new_non_trainables, seed_mask)

        record = None if on_step is None else (lambda k, adapted: on_step(k, merge(adapted)))
        seeds = random_state.carried(meta.non_trainables, seed_mask) or None
        plan = self.memory_plan
        result = inner.adapt(support_loss, [v for v, m in zip(meta.params, mask) if m],
                             self.update_rule(meta, inner_lr), steps, first_order=first_order,
                             carry=seeds, on_step=record, limit=limit,
                             recompute=bool(plan and plan.recompute),
                             exact_steps=plan.exact_steps if plan else None)
        non_trainables = meta.non_trainables if seeds is None else random_state.merge(
            meta.non_trainables, seed_mask, result.carry)
        return inner.Adapted(merge(result.params), result.state, non_trainables)

    def query_outputs(self, meta, adapted, query_x):
        """Query predictions at `adapted`'s fast weights and the updated non-trainables."""
        return forward(self.model, adapted.params, adapted.carry, query_x, training=True)

    # ----- the learner protocol -------------------------------------------------------

    def task_outputs(self, meta, task):
        support_x, support_y, query_x, query_y = task
        adapted = self.adapt_task(meta, support_x, support_y, self.inner_steps, self.inner_lr,
                                  self.first_order)
        prediction, new_non_trainables = self.query_outputs(meta, adapted, query_x)
        return TaskOutputs(self.task_loss(query_y, prediction), prediction, new_non_trainables)

    def adapt_states(self, meta, support_x, support_y, steps, inner_lr):
        wanted = set(steps)
        recorded = {}

        def record(step, fast):
            if step in wanted:
                recorded[step] = fast

        self.adapt_task(meta, support_x, support_y, max(steps), inner_lr, True, on_step=record)
        return [recorded[s] for s in steps]

    def adapt_state_upto(self, meta, support_x, support_y, steps, max_steps, inner_lr):
        """The fast weights after `steps` inner steps, a scalar int tensor up to `max_steps`.

        One graph of `max_steps` steps, each taken only while its index is below `steps`
        (what `export_adaptive` compiles for its `steps` argument).
        """
        return self.adapt_task(meta, support_x, support_y, max_steps, inner_lr, True,
                               limit=steps).params

    def predict_adapted(self, meta, state, x):
        return forward(self.model, state, meta.non_trainables, x, training=True)[0]

    def adapted_model(self, state):
        """A clone of `model` holding the adapted weights (and the model's other state).

        Its BatchNormalization layers normalise with the statistics of the batch they are
        given, as the inner loop and `evaluate` do (`ops.BatchStatisticsNormalization`): pass
        a task's inputs in one batch.
        """
        adapted = with_batch_statistics(self.model)
        for variable, value in zip(adapted.trainable_variables, state):
            variable.assign(value)
        return adapted

    def adapt_options(self, inner_lr=None):
        """`inner_lr`: the adaptation step size (defaults to the training `inner_lr`)."""
        return {"inner_lr": self.inner_lr if inner_lr is None else check_learning_rate(inner_lr)}

    # ----- second order within a memory budget -----------------------------------------

    # What `compile` asked for and what `fit` chose (`keras_meta.inner.memory`).
    _memory_request = (None, None)
    memory_plan = None

    def compile(self, *args, memory_budget=None, second_order_mode=None, **kwargs):
        """Configures meta-training (`MetaTrainer.compile`) and the inner loop's memory.

        Args:
            *args, **kwargs: `MetaTrainer.compile`'s arguments.
            memory_budget: Bytes the inner loops in flight may keep for the outer
                gradient, or `"auto"` (half the available host memory). `fit` chooses
                from an estimate (`keras_meta.inner.memory`): plain second order if it
                fits, else activations recomputed per inner step (exact), else truncated
                back-propagation through the last steps that fit (an approximation).
                The choice is logged (logger "keras_meta") and kept in `memory_plan`.
            second_order_mode: An explicit choice instead: `"plain"`, `"recompute"` or
                `"truncated:k"` (second order through the last `k` inner steps, first
                order before them).

        Raises:
            ValueError, TypeError: On a bad argument, or both memory arguments given.
        """
        memory.check_budget(memory_budget)
        if second_order_mode is not None:
            memory.parse_mode(second_order_mode)
            if memory_budget is not None:
                raise ValueError(
                    "Expected either `memory_budget` or `second_order_mode`, not both. "
                    f"Received: memory_budget={memory_budget!r}, "
                    f"second_order_mode={second_order_mode!r}")
        super().compile(*args, **kwargs)
        self._memory_request = (memory_budget, second_order_mode)
        self.memory_plan = None
        self._meta_compile_config["memory_budget"] = memory_budget
        self._meta_compile_config["second_order_mode"] = second_order_mode

    def _plan_memory(self, example):
        budget, mode = self._memory_request
        if budget is None and mode is None:
            return
        adapted = sum(int(np.prod(v.shape)) for v, m in
                      zip(self.model.trainable_variables, self.adapted_mask()) if m)
        shape = example.support_x.shape
        tasks = int(shape[0]) if self.vectorize else 1
        plan = memory.plan(self.model, adapted, self.inner_steps, int(shape[1]), tasks,
                           budget=budget, mode=mode)
        if plan != self.memory_plan:
            # The meta-step is traced with the plan: a new plan needs a new trace.
            self.memory_plan = plan
            self._functions.clear()
            self.train_function = None

    @property
    def _gradients_per_task(self):
        # Recomputation lives in the inner steps' custom gradients, which only a tape
        # inside the vectorized function calls.
        return bool(self.memory_plan and self.memory_plan.recompute)

    @property
    def default_adapt_steps(self):
        return self.inner_steps

    def get_config(self):
        config = {**super().get_config(), "inner_lr": self.inner_lr,
                  "inner_steps": self.inner_steps, "first_order": self.first_order}
        if self.inner_rule is not None:
            config["inner_rule"] = keras.saving.serialize_keras_object(self.inner_rule)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("inner_rule") is not None:
            config["inner_rule"] = keras.saving.deserialize_keras_object(config["inner_rule"])
        return super().from_config(config)


def head_mask(model, head_layers):
    """Which trainable weights of `model` belong to its last `head_layers` weighted layers."""
    layers = [layer for layer in _compat.flatten_layers(model, recursive=False)
              if layer.trainable_variables]
    head = {id(v) for layer in layers[-head_layers:] for v in layer.trainable_variables}
    return [id(v) in head for v in model.trainable_variables]

