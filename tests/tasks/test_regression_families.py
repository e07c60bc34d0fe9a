"""Regression families: C++ against the NumPy twins, the functions they compute, the classes."""

import numpy as np
import pytest

import keras_meta as km
from keras_meta import _core
from keras_meta._twin import regression as twin

CASES = [
    ("sinusoid", {}),
    ("sinusoid", dict(amplitude=(0.5, 2.0), phase=(0.0, 1.0), x_range=(-1.0, 3.0))),
    ("linear", {}),
    ("linear", dict(slope=(1.0, 1.0), intercept=(-0.5, 2.0), x_range=(0.0, 1.0))),
    ("polynomial", {}),
    ("polynomial", dict(degree=0)),
    ("polynomial", dict(degree=6, coefficients=(-2.0, 0.5), x_range=(-3.0, 3.0))),
    ("step_function", {}),
    ("step_function", dict(location=(0.0, 0.0), levels=(-3.0, 3.0))),
]


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1])
def test_native_matches_twin(name, kwargs, seed):
    got = getattr(_core, name)(9, 31, seed, **kwargs)
    want = getattr(twin, name)(9, 31, seed, **kwargs)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_linear_values():
    params, x, y = _core.linear(50, 20, 3)
    slope, intercept = params[:, :1, None], params[:, 1:, None]
    np.testing.assert_allclose(y, slope * x + intercept, rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(params) <= 3.0) and np.all(np.abs(x) <= 5.0)
    assert params[:, 0].min() < -2 and params[:, 0].max() > 2  # spans the default range


def test_polynomial_values():
    params, x, y = _core.polynomial(50, 20, 4, degree=3)
    assert params.shape == (50, 4) and np.all(np.abs(params) <= 1.0) and np.all(np.abs(x) <= 2.0)
    for p, xs, ys in zip(params, x[..., 0], y[..., 0]):
        np.testing.assert_allclose(ys, np.polyval(p[::-1].astype(np.float64), xs), rtol=1e-5, atol=1e-5)


def test_step_function_values():
    params, x, y = _core.step_function(50, 40, 5)
    location, left, right = params[:, :1], params[:, 1:2], params[:, 2:3]
    np.testing.assert_array_equal(y[..., 0], np.where(x[..., 0] < location, left, right))
    assert np.all(np.abs(location) <= 2.5) and np.all(np.abs(params[:, 1:]) <= 1.0)
    assert np.any(left != right)


def test_sinusoid_output_unchanged():
    # Values of the sinusoid family as first released; later families must not shift them.
    params, x, y = _core.sinusoid(2, 3, 0)
    np.testing.assert_array_equal(params, np.float32(
        [[2.0553274154663086, 2.766235828399658], [2.1445155143737793, 2.8733081817626953]]))
    np.testing.assert_array_equal(x[..., 0], np.float32(
        [[0.16679096221923828, 4.396580696105957, -4.410133361816406],
         [-0.24100399017333984, -1.4164690971374512, -1.0150556564331055]]))
    np.testing.assert_array_equal(y[..., 0], np.float32(
        [[-1.0605015754699707, 2.0516843795776367, -1.6012475490570068],
         [-0.05849615857005119, 1.9558429718017578, 1.456710934638977]]))


@pytest.mark.parametrize("call,error,match", [
    (lambda: _core.polynomial(2, 3, 0, degree=-1), ValueError, "degree=-1"),
    (lambda: _core.polynomial(2, 3, 0, degree=65), ValueError, "degree=65"),
    (lambda: _core.linear(2, 3, 0, slope=(1.0, 0.0)), ValueError, "slope=\\(1, 0\\)"),
    (lambda: _core.step_function(2, 3, 0, levels=(1.0, 0.0)), ValueError, "levels="),
    (lambda: _core.step_function(2, 3, 0, location=(1.0, 0.0)), ValueError, "location="),
    (lambda: _core.polynomial(2, 3, 0, coefficients=(1.0, 0.0)), ValueError, "coefficients="),
    (lambda: _core.linear(0, 3, 0), ValueError, "meta_batch_size=0"),
])
def test_native_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


FAMILIES = [
    (km.tasks.Linear, dict(slope=(-1.0, 1.0), intercept=(0.0, 2.0)), "linear", 2),
    (km.tasks.Polynomial, dict(degree=2, coefficients=(-0.5, 0.5)), "polynomial", 3),
    (km.tasks.StepFunction, dict(location=(-1.0, 1.0), levels=(0.0, 4.0)), "step_function", 3),
]


@pytest.mark.parametrize("cls,kwargs,native_name,num_params", FAMILIES)
def test_family_classes(cls, kwargs, native_name, num_params):
    tasks = cls(shots=4, queries=6, **kwargs)
    assert isinstance(tasks, km.tasks.RegressionFamily) and tasks.loss == "mse"
    batch, params = tasks.sample_with_params(5, 8)
    assert batch.support_x.shape == (5, 4, 1) and batch.query_y.shape == (5, 6, 1)
    assert params.shape == (5, num_params)
    x_range = tasks.x_range
    _, x, y = getattr(twin, native_name)(5, 10, 8, *kwargs.values(), x_range=x_range)
    np.testing.assert_array_equal(np.concatenate([batch.support_x, batch.query_x], 1), x)
    np.testing.assert_array_equal(np.concatenate([batch.support_y, batch.query_y], 1), y)
    for a, b in zip(tasks.sample(5, 8), batch):
        np.testing.assert_array_equal(a, b)
    test_batch = cls(shots=4, queries=6, split="test", **kwargs).sample(5, 8)
    assert not np.array_equal(test_batch.support_x, batch.support_x)
    assert cls(**tasks.get_config()).get_config() == tasks.get_config()


@pytest.mark.parametrize("call,error,match", [
    (lambda: km.tasks.Polynomial(degree=1.5), TypeError, "degree=1.5"),
    (lambda: km.tasks.Polynomial(degree=-1), ValueError, "degree=-1"),
    (lambda: km.tasks.Polynomial(degree=True), TypeError, "degree=True"),
    (lambda: km.tasks.Linear(slope=(2, 1)), ValueError, "slope=\\(2, 1\\)"),
    (lambda: km.tasks.Linear(intercept="ab"), TypeError, "intercept='ab'"),
    (lambda: km.tasks.StepFunction(levels=(0, float("inf"))), ValueError, "levels="),
    (lambda: km.tasks.StepFunction(location=None), TypeError, "location=None"),
    (lambda: km.tasks.Linear(shots=0), ValueError, "shots=0"),
    (lambda: km.tasks.StepFunction(split="dev"), ValueError, "split='dev'"),
])
def test_family_argument_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
