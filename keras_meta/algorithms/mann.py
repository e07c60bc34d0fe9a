"""Memory-augmented neural networks (Santoro et al., 2016)."""

import keras
import numpy as np
import tensorflow as tf

from keras_meta._validation import check_positive_int
from keras_meta.algorithms.sequence import SequenceHead, SequenceLearner

# Norm offset of the cosine similarity: a row set to zero by the LRUA write has no
# direction; its similarity is 0 and its gradient finite.
_EPSILON = 1e-8


def cosine_similarity(keys, memory):
    """`K(k, M(i)) = k . M(i) / (||k|| ||M(i)||)` for each head and slot.

    Args:
        keys: `[batch, heads, size]`.
        memory: `[batch, slots, size]`.

    Returns:
        `[batch, heads, slots]`.
    """
    dots = tf.einsum("bhm,bsm->bhs", keys, memory)
    key_norms = tf.sqrt(tf.reduce_sum(tf.square(keys), -1) + _EPSILON)
    slot_norms = tf.sqrt(tf.reduce_sum(tf.square(memory), -1) + _EPSILON)
    return dots / (key_norms[:, :, None] * slot_norms[:, None, :])


def least_used(usage, n):
    """`w^lu(i) = 1` where `w^u(i) <= m(w^u, n)`, the n-th smallest usage; else 0.

    A step function of the usage: it carries no gradient (piecewise constant).
    """
    usage = tf.stop_gradient(usage)
    threshold = -tf.math.top_k(-usage, k=n).values[:, -1:]
    return tf.cast(usage <= threshold, usage.dtype)


@keras.saving.register_keras_serializable(package="keras_meta")
class MemoryHead(SequenceHead):
    """LSTM controller with an external memory, least-recently-used access (LRUA).

    One step (`step`) reads the input `x_t` with the previous label `y_{t-1}`; see `MANN`
    for the equations. The state is `(h, c, memory, usage, read_weights, reads)` with a
    leading batch axis; the adapted state adds the last support label.

    Args:
        num_classes: Classes `N` (label inputs and logits).
        memory_slots: Memory rows.
        memory_size: Width of a memory row (and of a key).
        controller_units: LSTM units.
        read_heads: Read heads `n` (also the number of least-used slots written).
        gamma: Usage decay.
        **kwargs: Passed to `keras.layers.Layer` (e.g. `dtype`).
    """

    def __init__(self, num_classes, memory_slots=128, memory_size=40, controller_units=200,
                 read_heads=4, gamma=0.95, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.memory_slots = int(memory_slots)
        self.memory_size = int(memory_size)
        self.controller_units = int(controller_units)
        self.read_heads = int(read_heads)
        self.gamma = float(gamma)
        policy = self.dtype_policy
        self.controller = keras.layers.LSTMCell(controller_units, dtype=policy, name="controller")
        self.key_layer = keras.layers.Dense(read_heads * memory_size, activation="tanh",
                                            dtype=policy, name="keys")
        self.gate_layer = keras.layers.Dense(read_heads, dtype=policy, name="write_gates")
        self.output_layer = keras.layers.Dense(num_classes, dtype=policy, name="logits")

    def build(self, input_shape):
        reads = self.read_heads * self.memory_size
        self.controller.build((None, input_shape[-1] + self.num_classes + reads))
        for layer in (self.key_layer, self.gate_layer):
            layer.build((None, self.controller_units))
        self.output_layer.build((None, self.controller_units + reads))

    def initial_state(self, batch=1):
        """Zero controller state and reads; memory at 1e-6; usage a tiny ramp.

        The ramp orders the unused slots (slot 0 is least used first): with equal usages
        every slot would be least used, every write would go to all of them alike, and the
        memory would stay one repeated row.
        """
        dtype = self.compute_dtype
        units, heads, slots = self.controller_units, self.read_heads, self.memory_slots
        return (tf.zeros([batch, units], dtype), tf.zeros([batch, units], dtype),
                tf.fill([batch, slots, self.memory_size], tf.constant(1e-6, dtype)),
                tf.tile(tf.range(slots, dtype=dtype)[None] * 1e-6, [batch, 1]),
                tf.zeros([batch, heads, slots], dtype),
                tf.zeros([batch, heads * self.memory_size], dtype))

    def step(self, state, x, previous_label):
        """One time step: `(new_state, logits [batch, N])` for inputs `x [batch, dim]`."""
        h, c, memory, usage, read_weights, reads = state
        batch = tf.shape(x)[0]
        h, (h, c) = self.controller(tf.concat([x, previous_label, reads], -1), [h, c])
        keys = tf.reshape(self.key_layer(h), [batch, self.read_heads, self.memory_size])
        # LRUA write: the previously read slots or the least used ones, by a learned gate.
        gate = tf.sigmoid(self.gate_layer(h))[:, :, None]
        write_weights = gate * read_weights + (1 - gate) * least_used(usage, self.read_heads)[:, None]
        # The least used slot is set to zero before the write.
        erase = tf.one_hot(tf.argmin(usage, -1), self.memory_slots, dtype=memory.dtype)
        memory = (memory * (1 - erase)[:, :, None]
                  + tf.einsum("bhs,bhm->bsm", write_weights, keys))
        # Content-based read from the written memory.
        read_weights = tf.nn.softmax(cosine_similarity(keys, memory), axis=-1)
        reads = tf.reshape(tf.einsum("bhs,bsm->bhm", read_weights, memory), [batch, -1])
        usage = (self.gamma * usage + tf.reduce_sum(read_weights, 1)
                 + tf.reduce_sum(write_weights, 1))
        logits = self.output_layer(tf.concat([h, reads], -1))
        return (h, c, memory, usage, read_weights, reads), logits

    def read_support(self, embeddings, labels):
        """Runs the support sequence `(x_t, y_{t-1})`; logits of each `x_t` before `y_t`.

        Unrolled when the support size is static (the training and evaluation traces:
        `tf.vectorized_map` cannot differentiate a `tf.while_loop`), a `tf.while_loop`
        when it is not (`export_adaptive`'s free shots axis).
        """
        state, previous = self.initial_state(), tf.zeros_like(labels[:1])
        shots = embeddings.shape[0]
        if shots is not None:
            logits = []
            for t in range(shots):
                state, logit = self.step(state, embeddings[t:t + 1], previous)
                previous = labels[t:t + 1]
                logits.append(logit)
            return (*state, previous), tf.concat(logits, 0)

        shots = tf.shape(embeddings)[0]

        def body(t, state, previous, logits):
            state, logit = self.step(state, embeddings[t][None], previous)
            # A one-hot row update instead of a TensorArray: plain tensors throughout.
            logits += tf.one_hot(t, shots, dtype=logit.dtype)[:, None] * logit
            return t + 1, state, labels[t][None], logits

        _, state, previous, logits = tf.while_loop(
            lambda t, *_: t < shots, body,
            (tf.constant(0), state, previous, tf.zeros([shots, self.num_classes], labels.dtype)))
        return (*state, previous), logits

    def read_queries(self, state, embeddings):
        """One step from the read support state for each query, with the last support label."""
        *state, previous = state
        queries = tf.shape(embeddings)[0]
        state = tuple(tf.repeat(s, queries, axis=0) for s in state)
        return self.step(state, embeddings, tf.repeat(previous, queries, axis=0))[1]

    def get_config(self):
        return {**super().get_config(), "memory_slots": self.memory_slots,
                "memory_size": self.memory_size, "controller_units": self.controller_units,
                "read_heads": self.read_heads, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="keras_meta")
class MANN(SequenceLearner):
    """Memory-augmented neural network: an LSTM controller with an LRUA external memory.

    Episodes are sequences: at step `t` the network gets the example `x_t` (embedded by
    `model`) with the previous step's label `y_{t-1}` (one-hot; zeros at `t = 0`) and
    predicts `y_t`, so it must bind each label to the example seen one step earlier and
    recall the binding when the class returns. Per step (Santoro et al., 2016, section 3):

        h_t, c_t = LSTM([x_t, y_{t-1}, r_{t-1}], h_{t-1}, c_{t-1})
        k_t = tanh(W_k h_t + b_k),  alpha_t = W_a h_t + b_a           (per read head)
        w^lu_{t-1}(i) = 1 if w^u_{t-1}(i) <= m(w^u_{t-1}, n) else 0  (n least used slots)
        w^w_t = sigmoid(alpha_t) w^r_{t-1} + (1 - sigmoid(alpha_t)) w^lu_{t-1}
        M_t(i) = M_{t-1}(i) + w^w_t(i) k_t     (least used slot zeroed first)
        w^r_t(i) = softmax_i(K(k_t, M_t(i))),  K: cosine similarity
        r_t = sum_i w^r_t(i) M_t(i)
        w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t
        logits_t = W_o [h_t, r_t] + b_o

    with `n = read_heads`, summed over heads where several write. The previous reads
    `r_{t-1}` join the controller input as in the Neural Turing Machine the paper builds
    on. `m(v, n)` (the n-th smallest usage) is piecewise constant: the least-used weights
    carry no gradient.

    Tasks: the support set, in the order given (`km.tasks.FewShotClassification`
    shuffles it), is the labelled sequence; each query is predicted as the next step
    after it (input `x_q` with the last support label), independently of the other
    queries. The loss is the compiled one (default: the family's) over every step of the
    sequence, support predictions included (the paper's objective: the first instance of
    a class is a guess, later ones are recalled); predictions for metrics are the
    queries'. `adapt()` reads the support sequence and returns a Keras model holding the
    read state (controller state, memory, usage, reads, last label) that predicts the
    logits of new examples; it exports with `adapted.export(...)`, and `export_adaptive`
    exports the reading itself. `predict_sequence` gives the logits of every step of an
    episode (instance accuracy curves).

    Args:
        model: A built Keras 3 model embedding one example (flattened output), e.g. a
            Flatten + Dense for raw pixels as in the paper or a convolutional encoder.
        num_classes: Classes per episode `N`: labels are ids in `[0, N)` or one-hot.
        memory_slots: Memory rows (paper: 128).
        memory_size: Row width (paper: 40).
        controller_units: LSTM units (paper: 200).
        read_heads: Read heads, and least-used slots per write (paper: 4).
        gamma: Usage decay in `[0, 1]` (paper: 0.95).
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        TypeError: If `model` is not a Keras 3 model or a size is not an int.
        ValueError: If `model` is unbuilt, a size is not positive, `read_heads` exceeds
            `memory_slots`, or `gamma` is outside `[0, 1]`.

    Example:

    ```python
    tasks = km.tasks.FewShotClassification(images, labels, ways=5, shots=10, queries=1)
    encoder = keras.Sequential([keras.Input((20, 20, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(128)])
    mann = km.MANN(encoder, num_classes=5)
    mann.compile(optimizer=keras.optimizers.Adam(1e-3))   # loss: the family's (logits)
    mann.fit(tasks, meta_batch_size=16, epochs=10, steps_per_epoch=1000)
    logits = mann.predict_sequence(xs, ys)                 # [steps, 5], before each label
    classifier = mann.adapt(support_x, support_y)          # reads the support sequence
    classifier.predict(query_x)                            # logits for classes 0..4
    ```
    """

    def __init__(self, model, num_classes, memory_slots=128, memory_size=40,
                 controller_units=200, read_heads=4, gamma=0.95, **kwargs):
        sizes = {name: check_positive_int(value, name) for name, value in (
            ("memory_slots", memory_slots), ("memory_size", memory_size),
            ("controller_units", controller_units), ("read_heads", read_heads))}
        if sizes["read_heads"] > sizes["memory_slots"]:
            raise ValueError(f"Expected `read_heads` <= memory_slots={memory_slots}. Received: "
                             f"read_heads={read_heads}")
        if isinstance(gamma, (bool, np.bool_)) or not isinstance(gamma, (int, float, np.number)):
            raise TypeError(f"Expected `gamma` to be a number in [0, 1]. Received: gamma={gamma!r}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"Expected `gamma` to be a number in [0, 1]. Received: gamma={gamma!r}")
        super().__init__(model, num_classes, **kwargs)
        self.set_head(MemoryHead(self.num_classes, gamma=float(gamma), dtype=self._loss_dtype(),
                                 name="memory_head", **sizes))

    def predict_sequence(self, xs, ys):
        """Logits of every step of one episode, each before its label is given.

        Args:
            xs: Examples `[steps, *input_shape]` in sequence order.
            ys: Their labels (ids `[steps]` or one-hot `[steps, N]`); `ys[t]` is input at
                step `t + 1`.

        Returns:
            A NumPy array `[steps, num_classes]`.

        Raises:
            ValueError, TypeError: On mismatched or malformed `xs`/`ys`.
        """
        xs, ys = self.check_episode(xs, ys, "xs", "ys")

        def logits(xs, ys):
            meta = self.meta_state()
            return self.read_support(meta, meta.non_trainables, xs, ys)[1]

        return self._compiled("predict_sequence", logits, False)(
            tf.constant(xs, self._input_dtype()), tf.constant(ys)).numpy()

    def get_config(self):
        head = self.head
        return {**super().get_config(), "memory_slots": head.memory_slots,
                "memory_size": head.memory_size, "controller_units": head.controller_units,
                "read_heads": head.read_heads, "gamma": head.gamma}
