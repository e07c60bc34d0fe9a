"""Behaviour kept across refactors: every learner's outputs equal the recorded ones.

`learners.npz` was recorded by `record.py` on the commit before the architecture change
(MetaLearner in algorithms/base.py). Equal within 1e-6 relative: bit-identical is what was
measured when recorded, and the bound leaves room only for a changed operation order.

One change is intended: `evaluate(steps=...)`'s `loss_ci95` was `1.96 s / sqrt(n)` when
recorded and is now the library's one confidence interval, Student's t with `n - 1`
degrees of freedom, over the same `n` tasks; the golden half-widths are rescaled by
`t_{0.975, n-1} / 1.96`.
"""

import numpy as np
import pytest

import record
from keras_meta.evaluation import t_quantile
from keras_meta.tasks import graph
from learner_table import LEARNERS

GOLDEN = np.load(record.GOLDEN)
# Two modes by default (the task loop and the XLA-vectorized path that "auto" picks for
# dense models); the other two (`pytest -m slow`) are tied to them by test_learners'
# modes-agree test.
FAST_MODES = ("function", "xla_vectorized")
# The learners that existed when the golden file was recorded.
RECORDED = [name for name in LEARNERS if f"{name}/function/loss_history" in GOLDEN]
CASES = [(name, mode, False) for name in RECORDED for mode in record.RECORDED_MODES]
CASES += [("maml", mode, True) for mode in record.RECORDED_MODES]


# evaluate() in record.py: 2 meta-batches of 4 tasks.
CI_RESCALE = t_quantile(0.975, 2 * 4 - 1) / 1.96


def _compare(prefix, arrays):
    assert arrays, prefix
    for key, value in arrays.items():
        expected = GOLDEN[f"{prefix}/{key}"]
        if key == "evaluate":
            expected = expected * [1.0, CI_RESCALE]
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max(),
                                   err_msg=f"{prefix}/{key}")


@pytest.mark.parametrize("name, mode, batch_norm", [
    pytest.param(*case, marks=() if case[1] in FAST_MODES else pytest.mark.slow)
    for case in CASES])
def test_supervised_learner_matches_golden(name, mode, batch_norm, monkeypatch):
    # Recorded with the C++ sampler. Sinusoid tasks are now drawn by its TF-op twin, bit
    # for bit the same tasks (tests/tasks/test_graph_sampler.py), but a different graph
    # rounds differently: ~1e-6 relative after the BatchNorm model's second-order step.
    # The learners' arithmetic is compared here, on the sampler it was recorded with.
    monkeypatch.setattr(graph, "graph_sampler", lambda tasks: None)
    prefix = f"{'maml_bn' if batch_norm else name}/{mode}"
    _compare(prefix, record.supervised(name, mode, batch_norm))


def test_rl_learners_match_golden():
    arrays = record.rl()
    for learner in ("maml_rl", "rl2"):
        _compare(learner, {k.split("/", 1)[1]: v for k, v in arrays.items()
                           if k.startswith(learner + "/")})
