"""MAML++ (Antoniou et al., 2019, "How to train your MAML")."""

import keras
import numpy as np
import tensorflow as tf

from keras_meta import _compat, inner
from keras_meta._validation import check_positive_int, check_steps
from keras_meta.algorithms.gradient import GradientLearner
from keras_meta.ops import forward
from keras_meta.training import TaskOutputs

# The floor of the non-final step weights of the multi-step loss, times `inner_steps`
# (the reference code's `min_value_for_non_final_losses = 0.03 / steps`).
_MSL_FLOOR = 0.03


def _batch_norm_weights(model):
    """Indices in `model.trainable_variables` of the BatchNormalization scales and shifts."""
    owned = {id(v) for layer in _compat.flatten_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)
             for v in layer.trainable_variables}
    return [j for j, v in enumerate(model.trainable_variables) if id(v) in owned]


class _LastStepRepeated:
    """`rates[k]` for every inner step `k`: steps past training's reuse the last row."""

    def __init__(self, rates):
        self.rates = rates

    def __getitem__(self, step):
        return self.rates[min(step, self.rates.shape[0] - 1)]


@keras.saving.register_keras_serializable(package="keras_meta")
class MAMLPlusPlus(GradientLearner):
    """MAML++: MAML with the training fixes of Antoniou et al. (2019).

    For each task, `K = inner_steps` inner steps at fast weights, with a learned step size
    per weight tensor `j` and step `k` (LSLR):

        theta^(k+1)_j = theta^(k)_j - alpha_(k,j) * grad_j L_support(T; theta^(k), bn_k)

    where `bn_k` are the BatchNormalization scale and shift of step `k` (BNWB), learned by
    the outer loop only, and each step normalises with the statistics of its own batch
    (BNRS, below). The task's loss is the multi-step loss (MSL):

        L(T) = sum_k  v_k(epoch) * L_query(T; theta^(k+1), bn_k)

    with `v(epoch)` the reference code's annealing from uniform toward the last step
    (`multi_step_loss_weights`). The outer loop differentiates `mean_T L(T)` with
    respect to `theta`, `alpha` and every `bn_k`; through the inner gradients only from
    epoch `first_order_epochs` on (derivative-order annealing, DA).

    Epochs are counted from the learner's tracked meta-step counter, `epoch =
    task_step // steps_per_epoch`, inside the compiled step: give `steps_per_epoch` the
    value passed to `fit`. Restoring a checkpoint restores the schedule with it.

    Cosine outer learning-rate annealing (CA) is the optimizer's schedule, as in Keras:
    compile with `keras.optimizers.schedules.CosineDecay` over the whole run (example).
    The reference code anneals per epoch from 1e-3 to 1e-5; `CosineDecay` anneals per
    meta-step, its continuous version.

    Batch normalization: the model's own BatchNormalization scale and shift are the
    *last* step's (`K - 1`); the learner holds those of steps `0..K-2` in
    `batch_norm_steps` (one `[K - 1, *shape]` variable per scale or shift, initialised
    from the model's), so `adapt()` returns a plain clone of the model whose scale and
    shift are already those of the step the query predictions use. The inner loop
    does not adapt the scales and shifts (the reference code's default). Every forward
    pass in training mode normalises with its batch's own exact statistics, which in the
    reference code are per step too (it always calls `batch_norm(training=True)`); its
    per-step running averages are read by no computation there, so only the last step's
    are kept, as the model's moving statistics (updated from the query pass after the
    last step, averaged over tasks): what the adapted model uses in inference mode.

    Adaptation beyond training's `inner_steps` (`adapt`, `evaluate(steps=...)`) reuses
    the last trained step's learning rates and BatchNormalization scale and shift. The
    `inner_lr` option of `adapt`/`evaluate` rescales every learned rate by
    `inner_lr / self.inner_lr`, as Meta-SGD's does.

    Args:
        model: A built Keras 3 model.
        inner_lr: Initial value of every learned step size `alpha_(k,j)`.
        inner_steps: Inner steps `K` during meta-training.
        first_order: If True, first order throughout (the reference code's
            `second_order=False`), whatever `first_order_epochs` says.
        steps_per_epoch: Meta-steps per epoch of the schedules (>= 1).
        msl_epochs: Epochs over which the multi-step-loss weights anneal; from then on
            only the last step's query loss counts (0: the last step's loss throughout).
        first_order_epochs: Epochs trained first order before switching to second order
            (the paper anneals after 50; the released Omniglot configurations train
            second order throughout, `0`).
        **kwargs: Passed to `keras.Model`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If `steps_per_epoch` is not positive or an epoch count is negative.

    Example:

    ```python
    learner = km.MAMLPlusPlus(model, inner_lr=0.1, inner_steps=5, steps_per_epoch=500,
                              msl_epochs=20)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=150 * 500,
                                                      alpha=1e-2)
    learner.compile(optimizer=keras.optimizers.Adam(schedule))
    learner.fit(tasks, meta_batch_size=16, epochs=150, steps_per_epoch=500)
    ```
    """

    def __init__(self, model, inner_lr=0.1, inner_steps=5, first_order=False,
                 steps_per_epoch=500, msl_epochs=20, first_order_epochs=0, **kwargs):
        steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        msl_epochs = check_steps(msl_epochs, "msl_epochs", allow_zero=True)
        first_order_epochs = check_steps(first_order_epochs, "first_order_epochs",
                                         allow_zero=True)
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         first_order=first_order, **kwargs)
        self.steps_per_epoch = steps_per_epoch
        self.msl_epochs = msl_epochs
        self.first_order_epochs = first_order_epochs
        weights = self.model.trainable_variables
        self._batch_norm = _batch_norm_weights(self.model)
        self._mask = [j not in self._batch_norm for j in range(len(weights))]
        self.learning_rates = self.add_weight(
            shape=(self.inner_steps, sum(self._mask)),
            initializer="zeros", dtype=weights[0].dtype, trainable=True,
            name="learning_rates")
        # Assigned rather than a Constant initializer, which rounds through float32.
        self.learning_rates.assign(np.full(self.learning_rates.shape, self.inner_lr))
        self.batch_norm_steps = []
        for j in self._batch_norm if self.inner_steps > 1 else ():
            steps = self.add_weight(
                shape=(self.inner_steps - 1, *weights[j].shape), initializer="zeros",
                dtype=weights[j].dtype, trainable=True,
                name="steps_" + weights[j].path.replace("/", "_"))
            steps.assign(np.broadcast_to(weights[j].numpy(), steps.shape))
            self.batch_norm_steps.append(steps)

    def extra_meta_variables(self):
        return [self.learning_rates, *self.batch_norm_steps]

    def adapted_mask(self):
        return list(self._mask)

    def update_rule(self, meta, inner_lr):
        rates = meta.extras[0]
        scale = inner.cast_scalar(inner_lr, rates.dtype) / self.inner_lr
        return inner.per_layer_per_step_sgd(_LastStepRepeated(rates * scale))

    def step_weights(self, meta, weights, step):
        if step >= self.inner_steps - 1:
            return weights
        weights = list(weights)
        for j, steps in zip(self._batch_norm, meta.extras[1:]):
            weights[j] = steps[step]
        return weights

    # ----- schedules ------------------------------------------------------------------

    def epoch(self):
        """The schedules' epoch, `task_step // steps_per_epoch`, as an int64 tensor."""
        return tf.math.floordiv(tf.convert_to_tensor(self.task_step), self.steps_per_epoch)

    def multi_step_loss_weights(self, epoch=None):
        """The weights `v_k` of the query losses after each inner step, `[inner_steps]`.

        Before epoch `msl_epochs`, with `K = inner_steps`, `e = epoch`, `M = msl_epochs`:

            v_k = max(1/K - e / (K M), 0.03 / K)                   for k < K - 1
            v_(K-1) = min(1/K + e (K - 1) / (K M), 1 - 0.03 (K - 1) / K)

        (the reference code's `get_per_step_loss_importance_vector`); from epoch `M` on,
        `v = (0, ..., 0, 1)`.

        Args:
            epoch: An epoch (int or tensor); the learner's current `epoch()` by default.

        Returns:
            A float64 tensor.
        """
        k, m = self.inner_steps, self.msl_epochs
        last_only = tf.one_hot(k - 1, k, dtype=tf.float64)
        if m == 0:
            return last_only
        epoch = tf.cast(self.epoch() if epoch is None else epoch, tf.float64)
        decay = 1.0 / k / m
        floor = _MSL_FLOOR / k
        early = tf.maximum(1.0 / k - epoch * decay, floor)
        final = tf.minimum(1.0 / k + epoch * (k - 1) * decay, 1.0 - (k - 1) * floor)
        annealed = tf.concat([tf.fill([k - 1], early), tf.reshape(final, [1])], 0)
        return tf.where(epoch < m, annealed, last_only)

    def _first_order_now(self):
        """Python `True`/`False` when fixed by the configuration, else a boolean tensor."""
        if self.first_order or self.first_order_epochs == 0:
            return self.first_order
        return self.epoch() < self.first_order_epochs

    # ----- the learner protocol -------------------------------------------------------

    def task_outputs(self, meta, task):
        support_x, support_y, query_x, query_y = task
        losses = []

        def query_loss(weights, non_trainables, step):
            # The query after update k + 1 uses the BatchNormalization parameters of the
            # support pass that produced it (step k), as the reference code does.
            prediction, new_non_trainables = forward(
                self.model, self.step_weights(meta, weights, step), non_trainables, query_x,
                training=True)
            losses.append(self.task_loss(query_y, prediction))
            return prediction, new_non_trainables

        def after_update(k, fast):
            if 0 < k < self.inner_steps:
                query_loss(fast, meta.non_trainables, k - 1)

        adapted = self.adapt_task(meta, support_x, support_y, self.inner_steps, self.inner_lr,
                                  self._first_order_now(), on_step=after_update)
        # The last step's pass also carries the random-seed states the steps advanced.
        prediction, new_non_trainables = query_loss(adapted.params, adapted.carry,
                                                    self.inner_steps - 1)
        losses = tf.stack(losses)
        loss = tf.tensordot(tf.cast(self.multi_step_loss_weights(), losses.dtype), losses, 1)
        return TaskOutputs(loss, prediction, new_non_trainables)

    def get_config(self):
        return {**super().get_config(), "steps_per_epoch": self.steps_per_epoch,
                "msl_epochs": self.msl_epochs, "first_order_epochs": self.first_order_epochs}
