"""Second order within a memory budget: recomputation is exact, truncation is the
documented approximation, and `compile(memory_budget=...)` says what it chose.

The closed form: a linear model `w` under the support loss `mean((X w - y)^2)` has the
constant Hessian `H = 2 X^T X / n`, so after `K` SGD steps the meta-gradient of the query
loss is `(I - a H)^K g_q`, and truncated back-propagation through the last `k` steps
(the earlier ones first order) gives `(I - a H)^k g_q`.
"""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta as km
from keras_meta import inner
from keras_meta.inner import loop, memory
from learner_table import LEARNERS, MODES, mlp, weights_of

ALPHA, STEPS = 0.05, 4


def _linear_problem():
    rng = np.random.default_rng(0)
    xs, xq = rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    ys, yq, w = rng.normal(size=6), rng.normal(size=5), rng.normal(size=3)
    return xs, ys, xq, yq, w


def _meta_gradient(**options):
    xs, ys, xq, yq, w = (tf.constant(a) for a in _linear_problem())

    def support_loss(params, step):
        return tf.reduce_mean((tf.linalg.matvec(xs, params[0]) - ys) ** 2)

    with tf.GradientTape() as tape:
        tape.watch(w)
        adapted = inner.adapt(support_loss, [w], inner.sgd(ALPHA), STEPS, **options)
        loss = tf.reduce_mean((tf.linalg.matvec(xq, adapted.params[0]) - yq) ** 2)
    return tape.gradient(loss, w).numpy()


def _closed_form(exact_steps):
    xs, ys, xq, yq, w = _linear_problem()
    hessian = 2 * xs.T @ xs / len(ys)
    for _ in range(STEPS):
        w = w - ALPHA * 2 * xs.T @ (xs @ w - ys) / len(ys)
    jacobian = np.linalg.matrix_power(np.eye(3) - ALPHA * hessian, exact_steps)
    return jacobian @ (2 * xq.T @ (xq @ w - yq) / len(yq))


@pytest.mark.parametrize("options, exact_steps", [
    ({}, STEPS),
    ({"recompute": True}, STEPS),
    ({"exact_steps": 1}, 1),
    ({"exact_steps": 3}, 3),
    ({"exact_steps": 3, "recompute": True}, 3),
    ({"exact_steps": STEPS}, STEPS),
    ({"first_order": True}, 0),
])
def test_meta_gradient_matches_the_closed_form(options, exact_steps):
    np.testing.assert_allclose(_meta_gradient(**options), _closed_form(exact_steps),
                               rtol=1e-10, atol=1e-12)


def _ancestors(tensor):
    seen, stack = set(), [tensor.op]
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend([t.op for t in op.inputs] + list(op.control_inputs))
    return seen


def test_recomputation_in_a_graph_waits_for_the_incoming_gradient():
    # Without a data dependency on the gradient that reaches the step, the executor runs
    # the recomputation during the forward pass (or grappler merges it with the forward
    # step) and every step's activations are kept after all: no memory is saved.
    @tf.function
    def step(w, upstream):
        with tf.GradientTape() as tape:
            tape.watch(w)
            out = loop._recomputed(lambda v: [2.0 * tf.tanh(v)], [w])[0]
        return out, tape.gradient(out, w, output_gradients=upstream)

    spec = tf.TensorSpec([3], tf.float32)
    graph = step.get_concrete_function(spec, spec).graph
    forward = _ancestors(graph.outputs[0])
    recomputed = [op for op in graph.get_operations()
                  if op.type == "Tanh" and op not in forward]
    assert recomputed
    upstream = graph.inputs[1].op
    for op in recomputed:
        assert upstream in _ancestors(op.outputs[0])


def _fit(name, mode, second_order_mode, batch_norm=False):
    kwargs = {"first_order_epochs": 0} if name == "maml_pp" else {}
    learner = LEARNERS[name](mlp(hidden=8, batch_norm=batch_norm), **kwargs)
    learner.compile(optimizer=keras.optimizers.SGD(0.01), second_order_mode=second_order_mode,
                    **MODES[mode])
    learner.fit(km.tasks.Sinusoid(shots=4, queries=4), meta_batch_size=2, steps_per_epoch=1,
                verbose=0)
    return weights_of(learner)


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


# Eager: every learner whose inner loop reads meta-values it closes over (Meta-SGD's
# rates, ANIL's fixed body, MAML++'s per-step rates and BatchNorm weights).
@pytest.mark.parametrize("name", ["maml", "meta_sgd", "anil",
                                  pytest.param("maml_pp", marks=pytest.mark.slow)])
def test_recompute_equals_plain_eagerly(name):
    plain = _fit(name, "eager", "plain", batch_norm=name == "maml_pp")
    _assert_same(_fit(name, "eager", "recompute", batch_norm=name == "maml_pp"), plain)


def test_recompute_equals_plain_in_a_compiled_step():
    _assert_same(_fit("maml", "function", "recompute"), _fit("maml", "function", "plain"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", [m for m in MODES if m != "eager"])
def test_recompute_and_full_truncation_equal_plain_in_every_mode(mode):
    plain = _fit("maml", mode, "plain")
    _assert_same(_fit("maml", mode, "recompute"), plain)
    # MAML's table entry takes two inner steps: truncated through both is plain.
    _assert_same(_fit("maml", mode, "truncated:2"), plain)
    assert max(np.abs(a - b).max()
               for a, b in zip(_fit("maml", mode, "truncated:1"), plain)) > 1e-6


def test_plan_chooses_from_the_budget(caplog):
    model = mlp(hidden=8)
    args = (model, 8 + 8 + 8 * 8 + 8 + 8 + 1, 5, 10, 1)
    activations = memory.activation_elements(model)
    # Dense(8) -> tanh -> Dense(8) -> tanh -> Dense(1) per example, counted on the graph.
    assert activations >= 8 + 8 + 1
    estimates = {mode: memory.estimate(activations, *args[1:], *memory.parse_mode(mode))
                 for mode in ("plain", "recompute", "truncated:1", "truncated:4")}
    assert estimates["plain"] > estimates["truncated:4"] > estimates["recompute"]
    assert estimates["recompute"] > estimates["truncated:1"]
    with caplog.at_level(logging.INFO, logger="keras_meta"):
        assert memory.plan(*args, budget=estimates["plain"]).mode == "plain"
        assert memory.plan(*args, budget=estimates["plain"] - 1).mode == "recompute"
        assert memory.plan(*args, budget=estimates["recompute"] - 1).mode == "truncated:1"
        assert memory.plan(*args, mode="truncated:4").mode == "truncated:4"
        assert memory.plan(*args).mode == "plain"
    assert "second_order_mode=recompute" in caplog.text
    with caplog.at_level(logging.WARNING, logger="keras_meta"):
        assert memory.plan(*args, budget=1).mode == "truncated:1"
    assert "No second-order mode fits" in caplog.text


def test_vectorized_execution_recomputes_and_equals_plain(monkeypatch):
    # The vectorized outer gradient of a `tf.vectorized_map` would drop the recomputing
    # custom gradient (exact, plain's memory); with a recomputing plan the trainer takes
    # each task's gradient inside the vectorized function, so the recomputation runs.
    plain = _fit("maml", "vectorized", "plain")
    recomputations = []
    after_upstream = loop._after_upstream
    monkeypatch.setattr(loop, "_after_upstream",
                        lambda *args: recomputations.append(1) or after_upstream(*args))
    _assert_same(_fit("maml", "vectorized", "recompute"), plain)
    assert len(recomputations) == LEARNERS["maml"](mlp(hidden=8)).inner_steps


def test_recomputation_inside_map_fn_with_the_tape_outside():
    # The loop's gradient graph receives the step's inputs as captures: the recomputing
    # gradient must differentiate identities made there, or the meta-gradient is zero.
    rng = np.random.default_rng(0)
    w = tf.Variable(np.eye(3, dtype="float32"))
    xs = tf.constant(rng.normal(size=(4, 5, 3)).astype("float32"))

    def task_loss(x):
        def support_loss(params, step):
            del step
            return tf.reduce_mean(tf.tanh(x @ params[0]) ** 2)
        adapted = inner.adapt(support_loss, [tf.identity(w)], inner.sgd(0.1), 2,
                              recompute=recompute)
        return support_loss(adapted.params, 0)

    @tf.function
    def meta_gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.map_fn(task_loss, xs))
        return tape.gradient(loss, w)

    recompute = False
    plain = meta_gradient().numpy()
    recompute = True
    recomputed = tf.function(meta_gradient.python_function)().numpy()
    assert np.abs(plain).max() > 1e-3
    np.testing.assert_allclose(recomputed, plain, rtol=1e-5, atol=1e-7)


def test_compile_budget_is_planned_by_fit_and_kept_in_the_config():
    learner = km.MAML(mlp(hidden=8), inner_lr=0.05, inner_steps=3)
    learner.compile(loss="mse", memory_budget=1, run_eagerly=True, jit_compile=False,
                    vectorize=False)
    assert learner.memory_plan is None
    learner.fit(km.tasks.Sinusoid(shots=4, queries=4), meta_batch_size=2, steps_per_epoch=1,
                verbose=0)
    assert learner.memory_plan.mode == "truncated:1"
    assert learner.memory_plan.budget == 1
    assert learner.get_compile_config()["memory_budget"] == 1
