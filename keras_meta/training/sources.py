"""Task sources: what `fit`/`evaluate` accept, turned into the meta-batches of each step.

- A `TaskDistribution` is sampled in the graph: step `s` draws
  `tasks.sample(meta_batch_size, step_seed(seed, s))`, so the sequence depends only on
  (seed, step) and a restored run continues it. A family with a TF-op twin
  (`keras_meta.tasks.graph`: the built-in regression families) is drawn by those ops
  (`GraphSampler`: no host round trip, so an XLA call of `steps_per_execution` steps is
  one program); any other through a NumPy function (`InGraphSampler`), where one call
  draws a chunk of consecutive steps at once.
- A `tf.data.Dataset` of `TaskBatch` is passed through.
- A `TaskBatch` of arrays is a pool, cut into meta-batches in an order reshuffled every
  pass, also a pure function of (seed, step) sampled in the graph (`pool_draw`).
"""

import numpy as np
import tensorflow as tf

from keras_meta import _compat
from keras_meta._validation import check_positive_int
from keras_meta.tasks.base import TaskBatch, TaskDistribution, step_seed

# Host memory for the meta-batches one call of `steps_per_execution` steps samples at once.
SAMPLE_CHUNK_BYTES = 64 * 2**20
DEFAULT_VALIDATION_BATCHES = 4
POOL_TYPES = (TaskBatch, tuple, list, dict)


def as_task_batch(data, name="tasks"):
    """Normalises a TaskBatch-like structure (namedtuple, 4-sequence, dict, 1-tuple)."""
    if isinstance(data, TaskBatch):
        return data
    if isinstance(data, dict) and set(data) == set(TaskBatch._fields):
        return TaskBatch(**data)
    if isinstance(data, (tuple, list)):
        if len(data) == 1:
            return as_task_batch(data[0], name)
        if len(data) == 4:
            return TaskBatch(*data)
    raise TypeError(
        "Expected `" + name + "` to be a TaskBatch (support_x, support_y, query_x, query_y) "
        f"with a leading meta-batch axis. Received: {name} of type {type(data).__name__}"
        + (f" with {len(data)} elements" if isinstance(data, (tuple, list, dict)) else "")
    )


def shape_of(value):
    return tuple(value.shape)


def check_task_shapes(batch, name="tasks"):
    """Validates the shapes of a TaskBatch of arrays/tensors (static shapes only)."""
    shapes = {field: shape_of(value) for field, value in zip(TaskBatch._fields, batch)}
    for field, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(
                f"Expected `{name}.{field}` to have a leading meta-batch axis and a "
                f"per-task example axis (rank >= 2). Received: {name}.{field}.shape={shape}"
            )
    tasks = {shapes[f][0] for f in TaskBatch._fields}
    if len(tasks) != 1:
        raise ValueError(
            f"Expected every field of `{name}` to have the same meta-batch size. Received: "
            + ", ".join(f"{f}.shape={s}" for f, s in shapes.items())
        )
    if 0 in tasks:
        raise ValueError(f"Expected a non-empty meta-batch. Received: {name} with 0 tasks")
    for x_field, y_field in (("support_x", "support_y"), ("query_x", "query_y")):
        if shapes[x_field][1] != shapes[y_field][1]:
            raise ValueError(
                f"Expected `{name}.{x_field}` and `{name}.{y_field}` to have the same number "
                f"of examples per task. Received: {x_field}.shape={shapes[x_field]}, "
                f"{y_field}.shape={shapes[y_field]}"
            )
        if 0 in shapes[x_field][1:2]:
            raise ValueError(
                f"Expected at least one example per task in `{name}.{x_field}`. "
                f"Received: {x_field}.shape={shapes[x_field]}"
            )
    if shapes["support_x"][2:] != shapes["query_x"][2:] or (
        shapes["support_y"][2:] != shapes["query_y"][2:]
    ):
        raise ValueError(
            f"Expected support and query examples of `{name}` to have the same shape. "
            "Received: " + ", ".join(f"{f}.shape={s}" for f, s in shapes.items())
        )
    return batch


def as_tensors(data):
    """A TaskBatch of tensors from any TaskBatch-like structure."""
    return TaskBatch(*(tf.convert_to_tensor(t) for t in as_task_batch(data)))


def without_autotune(dataset):
    """`dataset` with tf.data autotuning off, for the learner's own in-memory pipelines.

    They have nothing to tune, and the autotune thread sleeps in doubling periods (10 ms,
    20 ms, ...): deleting the iterator at the end of `fit` could wait for its next wake-up,
    seconds after the last step (measured: 5.1 s instead of 3.1 s for a 4-step fit).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def sampled_dataset(tasks, meta_batch_size, batches, seed):
    """`batches` meta-batches of a distribution, drawn once: validation and evaluation."""
    batch_list = [tasks.sample(meta_batch_size, step_seed(seed, b)) for b in range(batches)]
    stacked = TaskBatch(*(np.stack(f) for f in zip(*batch_list)))
    return without_autotune(tf.data.Dataset.from_tensor_slices(stacked))


def pool_draw(pool, meta_batch_size, seed):
    """Step `s`'s meta-batch of a pool, a pure function of (seed, s).

    The pool is cut into `N // meta_batch_size` meta-batches per pass (the remainder is
    left out of that pass), in an order shuffled anew for every pass `p` from
    `step_seed(seed, p)`: like a reshuffled `tf.data` pipeline, but a resumed run continues
    the same sequence from the restored step.
    """
    num_tasks = shape_of(pool.support_x)[0]
    if meta_batch_size > num_tasks:
        raise ValueError(
            f"Expected `meta_batch_size` <= the number of tasks in the TaskBatch "
            f"({num_tasks}). Received: meta_batch_size={meta_batch_size}"
        )
    steps_per_pass = num_tasks // meta_batch_size

    def draw(step):
        epoch, index = divmod(step, steps_per_pass)
        order = np.random.default_rng(step_seed(seed, epoch)).permutation(num_tasks)
        chosen = order[index * meta_batch_size:(index + 1) * meta_batch_size]
        return TaskBatch(*(v[chosen] for v in pool))

    return draw


def pool_of(tasks, name="tasks"):
    pool = TaskBatch(*(np.asarray(v) for v in as_task_batch(tasks, name)))
    check_task_shapes(pool, name)
    return pool


class InGraphSampler:
    """Draws the meta-batches of a source that is a pure function of (seed, step) inside
    the compiled train function, from the learner's tracked step counter.

    Args:
        draw: `draw(step) -> TaskBatch` of NumPy arrays, a pure function of `step`.
        meta_batch_size: Tasks per meta-step.
        spec: `TensorSpec`s of one meta-batch (from an example draw).
    """

    in_graph_ops = False  # draws through a NumPy function: a host round trip per chunk

    def __init__(self, draw, meta_batch_size, spec):
        self.draw, self.meta_batch_size, self.spec = draw, meta_batch_size, spec

    def describe(self):
        return "a NumPy function in the graph (a host round trip per chunk of steps)"

    def batch_bytes(self):
        return sum(s.shape.num_elements() * s.dtype.size for s in self.spec)

    def chunk_steps(self, steps_per_execution):
        """How many steps' meta-batches one NumPy call draws (at most SAMPLE_CHUNK_BYTES)."""
        return max(1, min(steps_per_execution, SAMPLE_CHUNK_BYTES // max(1, self.batch_bytes())))

    def sample_steps(self, first_step, count):
        """The meta-batches of steps `first_step .. first_step + count - 1`, stacked.

        The sequence does not depend on how steps are grouped into calls.
        """

        def sample(first, count):
            batches = [self._checked(int(first) + k) for k in range(int(count))]
            return tuple(np.stack([np.asarray(batch[j], dtype=s.dtype.as_numpy_dtype)
                                   for batch in batches])
                         for j, s in enumerate(self.spec))

        values = tf.numpy_function(sample, [first_step, tf.cast(count, tf.int64)],
                                   [s.dtype for s in self.spec], stateful=True)
        for value, s in zip(values, self.spec):
            value.set_shape(tf.TensorShape([None]).concatenate(s.shape))
        return TaskBatch(*values)

    def _checked(self, step):
        """Step `step`'s meta-batch, refused with a clear error where its shapes differ
        from the first draw's (the compiled step is built for those)."""
        batch = as_task_batch(self.draw(step), "tasks.sample(...)")
        for field, value, s in zip(TaskBatch._fields, batch, self.spec):
            shape = np.shape(value)
            if tuple(shape) != tuple(s.shape):
                raise ValueError(
                    f"Expected every meta-batch to keep the shapes of the first: "
                    f"{field}.shape={tuple(s.shape)}. Received: {field}.shape={tuple(shape)} at "
                    f"step {step}")
        return batch

    def sample_step(self, step):
        """Step `step`'s meta-batch, as tensors."""
        return TaskBatch(*(v[0] for v in self.sample_steps(step, 1)))

    def sample_replica_share(self, first_step, replica_context):
        """This replica's share of step `first_step`'s meta-batch.

        Every replica draws the same meta-batch and takes its own contiguous share.
        """
        batch = self.sample_step(first_step)
        replicas = replica_context.num_replicas_in_sync
        if replicas == 1:
            return batch
        share = self.meta_batch_size // replicas
        start = replica_context.replica_id_in_sync_group * share
        return TaskBatch(*(v[start:start + share] for v in batch))


class GraphSampler(InGraphSampler):
    """An `InGraphSampler` whose draws are TensorFlow ops (`keras_meta.tasks.graph`), equal
    bit for bit to the family's C++ sampler: nothing leaves the graph, and XLA compiles
    the sampling with the meta-steps.

    Args:
        sample: `sample(meta_batch_size, seed) -> TaskBatch` of tensors, seed a
            `(low, high)` uint32 pair.
        seed: The run seed (a Python int).
        meta_batch_size: Tasks per meta-step.
        spec: `TensorSpec`s of one meta-batch.
    """

    in_graph_ops = True

    def __init__(self, sample, seed, meta_batch_size, spec):
        super().__init__(None, meta_batch_size, spec)
        self.sample, self.seed = sample, seed

    def sample_step(self, step):
        from keras_meta.ops import philox

        batch = self.sample(self.meta_batch_size, philox.derive_seed(self.seed, step))
        # Computed once into buffers: XLA:CPU otherwise fuses the draw (float64 sines
        # included) into the vector-matrix products of the meta-gradient that read it,
        # which recompute it per output element (40 times a step for the sinusoid MLP).
        return TaskBatch(*_compat.optimization_barrier()(*batch))

    def sample_steps(self, first_step, count):
        # One step at a time: the trainer's graph path draws each step with `sample_step`.
        return TaskBatch(*(v[None] for v in self.sample_step(first_step)))

    def chunk_steps(self, steps_per_execution):
        return 1

    def describe(self):
        return "TensorFlow ops in the graph (the family's TF twin of its C++ sampler)"


def _in_graph(draw, meta_batch_size, replicas, example, graph_sample=None, seed=0):
    spec = tuple(tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for v in example)
    if meta_batch_size % replicas:
        raise ValueError(
            f"Expected `meta_batch_size` to be divisible by the {replicas} replicas "
            f"of the distribution strategy. Received: meta_batch_size={meta_batch_size}"
        )
    # One placeholder element per replica: the tasks are sampled in the graph.
    dummy = tf.data.Dataset.from_tensors(tf.zeros((replicas,), tf.int32)).repeat()
    if graph_sample is not None:
        return without_autotune(dummy), GraphSampler(graph_sample, seed, meta_batch_size, spec)
    return without_autotune(dummy), InGraphSampler(draw, meta_batch_size, spec)


def prepare(tasks, meta_batch_size, seed, replicas):
    """Validates `tasks` and returns `(keras_x, example TaskBatch, InGraphSampler or None)`.

    Distributions and pools are sampled in the graph (an `InGraphSampler`); a dataset is
    Keras's input.

    Raises:
        TypeError, ValueError: On a malformed source, before any state changes.
    """
    if isinstance(tasks, TaskDistribution):
        example = as_task_batch(tasks.sample(meta_batch_size, step_seed(seed, 0)),
                                "tasks.sample(...)")
        check_task_shapes(example, "tasks.sample(...)")
        example = TaskBatch(*(np.asarray(v) for v in example))
        from keras_meta.tasks.graph import graph_sampler

        dummy, sampler = _in_graph(lambda step: tasks.sample(meta_batch_size, step_seed(seed, step)),
                                   meta_batch_size, replicas, example, graph_sampler(tasks), seed)
        return dummy, example, sampler
    if isinstance(tasks, tf.data.Dataset):
        spec = tasks.element_spec
        try:
            example = as_task_batch(spec, "tasks.element_spec")
        except TypeError:
            raise TypeError(
                "Expected `tasks` to be a tf.data.Dataset of TaskBatch elements "
                "(support_x, support_y, query_x, query_y). Received: a dataset with "
                f"element_spec={spec}"
            ) from None
        check_task_shapes(example, "tasks")
        return tasks, example, None
    if isinstance(tasks, POOL_TYPES):
        pool = pool_of(tasks)
        draw = pool_draw(pool, meta_batch_size, seed)
        dummy, sampler = _in_graph(draw, meta_batch_size, replicas, draw(0))
        return dummy, pool, sampler
    raise TypeError(
        "Expected `tasks` to be a TaskDistribution, a tf.data.Dataset of TaskBatch or a "
        f"TaskBatch of arrays. Received: tasks of type {type(tasks).__name__}"
    )


def validation_source(tasks, meta_batch_size, batches, seed):
    """The validation data `fit` hands Keras for `validation_tasks`, and an example batch."""
    if isinstance(tasks, TaskDistribution):
        batches = DEFAULT_VALIDATION_BATCHES if batches is None else check_positive_int(
            batches, "validation_batches")
        example = as_task_batch(tasks.sample(1, 0), "validation_tasks.sample(...)")
        check_task_shapes(example, "validation_tasks")
        return sampled_dataset(tasks, meta_batch_size, batches, seed ^ 0x5A5A), example
    if isinstance(tasks, tf.data.Dataset):
        example = as_task_batch(tasks.element_spec, "validation_tasks")
        check_task_shapes(example, "validation_tasks")
        return tasks, example
    pool = pool_of(tasks, "validation_tasks")
    return tf.data.Dataset.from_tensors(pool), pool


def check_finite(dataset, name):
    """Refuses an endless dataset where nothing else bounds the number of batches."""
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"Expected a finite `{name}` dataset here (an endless one would never finish), or "
            f"`steps_per_epoch`/`steps` to bound it. Received: {name} with infinite cardinality")


def check_matching(reference, other, name):
    """Refuses tasks whose examples differ in shape or kind from the training tasks'."""
    for field in TaskBatch._fields:
        a, b = getattr(reference, field), getattr(other, field)
        same_kind = tf.as_dtype(a.dtype).is_floating == tf.as_dtype(b.dtype).is_floating
        if tuple(a.shape[2:]) != tuple(b.shape[2:]) or not same_kind:
            raise ValueError(
                f"Expected `{name}.{field}` to hold examples like the training tasks' "
                f"(shape {tuple(a.shape[2:])}, dtype {tf.as_dtype(a.dtype).name}). Received: "
                f"{name}.{field} with examples of shape {tuple(b.shape[2:])}, dtype "
                f"{tf.as_dtype(b.dtype).name}")


def evaluation_batches(tasks, meta_batch_size, num_batches, seed):
    """The meta-batches `evaluate(steps=[...])` adapts to, as TaskBatches of arrays."""
    if isinstance(tasks, TaskDistribution):
        batches = [as_task_batch(tasks.sample(meta_batch_size, step_seed(seed, b)))
                   for b in range(num_batches)]
    elif isinstance(tasks, tf.data.Dataset):
        batches = [as_task_batch(b) for b in tasks.take(num_batches)]
    else:
        batches = [as_task_batch(tasks)]
    for b in batches:
        check_task_shapes(b)
    return batches
