"""Every public entry point, fed bad input, raises a clear Python error naming the argument.

One table per surface: (id, call, expected exception, message pattern). Each call gets a
freshly built context; after the bad call the context must be indistinguishable from an
identical context that never saw it (same samples, same buffer contents and returns, same
navigation steps, same learner weights), so a failed call changes no state.

The native (`keras_meta._core`) cases also run in a subprocess (`run_native_cases`), so a
segfault or abort fails `test_native_cases_in_a_subprocess` instead of killing pytest.

Decided behaviour for inputs that are not errors:
- Read-only arrays are accepted wherever the entry point only reads them (EpisodeSampler,
  FewShotClassification, from_arrays, RolloutBuffer.add/gae, BatchedNavigation, adapt);
  `RolloutBuffer.data()` hands out read-only views, and writing to them raises.
- NaN in rollout data (observations, rewards, values) is stored and propagates through
  returns/GAE of its own row only; NaN actions/goals of BatchedNavigation and NaN or
  infinite ranges of the regression families are rejected.
- Wrong Python types for integer arguments of `_core` functions (e.g. a str for
  `meta_batch_size`) raise pybind11's TypeError, which lists the signature and the values
  received; seeds and Philox counters are converted by `_core` itself and name the argument.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_meta as km
from keras_meta import _core
from keras_meta.rl import RolloutBuffer

# --- shared builders ---------------------------------------------------------------------

IMAGES = np.arange(12 * 4 * 4, dtype=np.uint8).reshape(12, 4, 4, 1)
LABELS = np.repeat(np.arange(4, dtype=np.int64), 3)
SPLIT = np.arange(4, dtype=np.int64)
F32 = np.float32


def _read_only(array):
    array = np.array(array)
    array.setflags(write=False)
    return array


def _core_step(t=1, e=2, o=3, a=2, fill=0.0):
    return dict(observations=np.full((t, e, o), fill, F32), actions=np.full((t, e, a), fill, F32),
                rewards=np.full((t, e), fill, F32), terminated=np.zeros((t, e), bool),
                truncated=np.zeros((t, e), bool), next_observations=np.full((t, e, o), fill, F32))


def _wrapper_step(fill=0.0):
    return dict(observations=np.full((1, 2, 3), fill), actions=np.full((1, 2, 2), fill, F32),
                rewards=np.full((1, 2), fill), terminated=np.zeros((1, 2), bool),
                truncated=np.zeros((1, 2), bool), next_observations=np.full((1, 2, 3), fill))


def native_context():
    """Fresh objects with some history, built only from `_core` and NumPy-level wrappers."""
    sampler = _core.EpisodeSampler(IMAGES, LABELS, SPLIT, ways=2, shots=1, queries=1, num_threads=2)
    buffer = _core.RolloutBuffer(1, 2, 4, 3, 2)
    buffer.add(**_core_step(fill=0.5))
    wrapped = RolloutBuffer(1, 2, 4, (3,), (2,))
    wrapped.add(**_wrapper_step(fill=0.25))
    nav = _core.BatchedNavigation(2, horizon=5)
    nav.set_goals(np.array([[0.2, 0.1], [-0.3, 0.4]], F32))
    nav.reset()
    nav.step(np.full((2, 2), 0.05, F32))
    tasks = km.tasks.FewShotClassification(IMAGES, LABELS, ways=2, shots=1, queries=1)
    return dict(sampler=sampler, buffer=buffer, wrapped=wrapped, nav=nav, tasks=tasks)


def observe(ctx):
    """Everything the context's objects produce now and after one more identical step."""
    out = []
    out += list(ctx["sampler"].sample(3, 11)) + list(ctx["sampler"].episode_indices(3, 11))
    out += list(ctx["tasks"].sample(2, 5))
    for buf in (ctx["buffer"], ctx["wrapped"]):
        values = np.linspace(0, 1, 8, dtype=F32).reshape(1, 2, 4)
        out += [np.array(v) for v in buf.data().values()] + [np.array(len(buf))]
        out += list(buf.gae(values, values)) + [buf.discounted_returns(0.9)]
    ctx["buffer"].add(**_core_step(fill=1.0))
    ctx["wrapped"].add(**_wrapper_step(fill=1.0))
    out += [np.array(v) for v in ctx["buffer"].data().values()]
    out += [np.array(v) for v in ctx["wrapped"].data().values()]
    out.append(ctx["nav"].goals())
    out += list(ctx["nav"].step(np.full((2, 2), 0.07, F32)))
    return out


# --- native and NumPy-level cases (no TensorFlow graph work) --------------------------------


def _zeros():
    return np.zeros((1, 2, 4), F32)


def _values_pair():
    return _zeros(), _zeros()

_PYBIND_TYPE = r"incompatible (function|constructor) arguments"
NaN, Inf = float("nan"), float("inf")


def _sampler_kwargs(**overrides):
    kwargs = dict(images=IMAGES, labels=LABELS, split=SPLIT, ways=2, shots=1, queries=1)
    kwargs.update(overrides)
    return kwargs


NATIVE_CASES = [
    # random
    ("philox-negative-seed", lambda c: _core.philox_uniform(-1, 0, 0, 4), ValueError, r"Received: seed=-1"),
    ("philox-seed-2**64", lambda c: _core.philox_uniform(2**64, 0, 0, 4), ValueError, r"seed=18446744073709551616"),
    ("philox-float-seed", lambda c: _core.philox_uniform(1.5, 0, 0, 4), TypeError, r"Received: seed=1.5"),
    ("philox-bool-seed", lambda c: _core.philox_uniform(True, 0, 0, 4), TypeError, r"Received: seed=True"),
    ("philox-item-2**32", lambda c: _core.philox_uniform(0, 2**32, 0, 4), ValueError, r"item=4294967296"),
    ("philox-stream-negative", lambda c: _core.philox_uniform(0, 0, -1, 4), ValueError, r"stream=-1"),
    ("philox-count-zero", lambda c: _core.philox_uniform(0, 0, 0, 0), ValueError, r"Received: count=0"),
    ("philox-count-2**33", lambda c: _core.philox_uniform(0, 0, 0, 2**33), ValueError, r"count=8589934592"),
    ("philox-count-str", lambda c: _core.philox_uniform(0, 0, 0, "4"), TypeError, _PYBIND_TYPE),
    ("derive-negative-step", lambda c: _core.derive_seed(0, -3), ValueError, r"Received: step=-3"),
    ("derive-str-seed", lambda c: _core.derive_seed("0", 1), TypeError, r"Received: seed='0'"),
    # regression families
    *[(f"{fn}-{bad}", (lambda fn, args: lambda c: getattr(_core, fn)(*args))(fn, args), error, match)
      for fn in ("sinusoid", "linear", "polynomial", "step_function")
      for bad, args, error, match in [
          ("zero-tasks", (0, 5, 0), ValueError, r"Received: meta_batch_size=0"),
          ("negative-points", (2, -5, 0), ValueError, r"Received: num_points=-5"),
          ("tasks-above-2**32", (2**32 + 1, 1, 0), ValueError, r"meta_batch_size=4294967297"),
          ("negative-seed", (2, 5, -1), ValueError, r"Received: seed=-1"),
          ("float-seed", (2, 5, 0.5), TypeError, r"Received: seed=0.5"),
          ("str-size", ("2", 5, 0), TypeError, _PYBIND_TYPE),
      ]],
    ("sinusoid-reversed-amplitude", lambda c: _core.sinusoid(2, 5, 0, amplitude=(5.0, 1.0)), ValueError,
     r"amplitude.*Received: amplitude=\(5, 1\)"),
    ("sinusoid-nan-phase", lambda c: _core.sinusoid(2, 5, 0, phase=(NaN, 1.0)), ValueError, r"Received: phase=\(nan"),
    ("sinusoid-infinite-x", lambda c: _core.sinusoid(2, 5, 0, x_range=(-Inf, 1.0)), ValueError,
     r"finite.*Received: x_range=\(-inf"),
    ("sinusoid-short-range", lambda c: _core.sinusoid(2, 5, 0, amplitude=(1.0,)), TypeError, _PYBIND_TYPE),
    ("linear-infinite-slope", lambda c: _core.linear(2, 5, 0, slope=(0.0, Inf)), ValueError, r"Received: slope="),
    ("linear-nan-intercept", lambda c: _core.linear(2, 5, 0, intercept=(0.0, NaN)), ValueError, r"intercept="),
    ("polynomial-degree-65", lambda c: _core.polynomial(2, 5, 0, degree=65), ValueError, r"Received: degree=65"),
    ("polynomial-degree-negative", lambda c: _core.polynomial(2, 5, 0, degree=-1), ValueError, r"degree=-1"),
    ("polynomial-nan-coefficients", lambda c: _core.polynomial(2, 5, 0, coefficients=(NaN, NaN)), ValueError,
     r"coefficients="),
    ("step-reversed-levels", lambda c: _core.step_function(2, 5, 0, levels=(1.0, -1.0)), ValueError, r"levels="),
    ("step-infinite-location", lambda c: _core.step_function(2, 5, 0, location=(Inf, Inf)), ValueError,
     r"location="),
    # EpisodeSampler constructor
    ("sampler-images-list", lambda c: _core.EpisodeSampler(**_sampler_kwargs(images=IMAGES.tolist())), TypeError,
     r"Expected `images` to be a NumPy array"),
    ("sampler-images-float", lambda c: _core.EpisodeSampler(**_sampler_kwargs(images=IMAGES.astype(F32))),
     TypeError, r"images.dtype=float32"),
    ("sampler-images-rank3", lambda c: _core.EpisodeSampler(**_sampler_kwargs(images=IMAGES[..., 0])), ValueError,
     r"images.shape=\(12, 4, 4\)"),
    ("sampler-images-strided", lambda c: _core.EpisodeSampler(**_sampler_kwargs(
        images=np.repeat(IMAGES, 2, axis=2)[:, :, ::2])), ValueError, r"`images` to be C-contiguous"),
    ("sampler-images-empty-pixels", lambda c: _core.EpisodeSampler(**_sampler_kwargs(
        images=np.zeros((12, 0, 4, 1), np.uint8))), ValueError, r"non-empty images"),
    ("sampler-labels-int32", lambda c: _core.EpisodeSampler(**_sampler_kwargs(labels=LABELS.astype(np.int32))),
     TypeError, r"labels.dtype=int32"),
    ("sampler-labels-short", lambda c: _core.EpisodeSampler(**_sampler_kwargs(labels=LABELS[:5])), ValueError,
     r"labels.shape=\(5,\)"),
    ("sampler-labels-negative", lambda c: _core.EpisodeSampler(**_sampler_kwargs(labels=LABELS - 1)), ValueError,
     r"labels\[0\]=-1"),
    ("sampler-split-empty", lambda c: _core.EpisodeSampler(**_sampler_kwargs(split=np.zeros(0, np.int64))),
     ValueError, r"split.shape=\(0,\)"),
    ("sampler-split-repeats", lambda c: _core.EpisodeSampler(**_sampler_kwargs(split=np.array([1, 1], np.int64))),
     ValueError, r"split repeats class 1"),
    ("sampler-split-unknown", lambda c: _core.EpisodeSampler(**_sampler_kwargs(split=np.array([0, 9], np.int64))),
     ValueError, r"split\[1\]=9"),
    ("sampler-ways-zero", lambda c: _core.EpisodeSampler(**_sampler_kwargs(ways=0)), ValueError, r"ways=0"),
    ("sampler-ways-too-many", lambda c: _core.EpisodeSampler(**_sampler_kwargs(ways=5)), ValueError, r"ways=5"),
    ("sampler-shots-too-many", lambda c: _core.EpisodeSampler(**_sampler_kwargs(shots=3)), ValueError,
     r"shots=3, queries=1"),
    # Found by the UBSan fuzz run: shots + queries overflowed int64 before the size check.
    ("sampler-shots-int64-max", lambda c: _core.EpisodeSampler(**_sampler_kwargs(shots=2**63 - 1)), ValueError,
     r"shots=9223372036854775807, queries=1"),
    ("sampler-threads-65", lambda c: _core.EpisodeSampler(**_sampler_kwargs(num_threads=65)), ValueError,
     r"num_threads=65"),
    ("sampler-rotations-non-square", lambda c: _core.EpisodeSampler(**_sampler_kwargs(
        images=np.zeros((12, 4, 3, 1), np.uint8), rotations=True)), ValueError, r"square images"),
    # EpisodeSampler methods
    ("sample-zero-batch", lambda c: c["sampler"].sample(0, 1), ValueError, r"meta_batch_size=0"),
    ("sample-batch-2**31", lambda c: c["sampler"].sample(2**31, 1), ValueError, r"meta_batch_size=2147483648"),
    ("sample-negative-seed", lambda c: c["sampler"].sample(2, -1), ValueError, r"Received: seed=-1"),
    ("sample-str-seed", lambda c: c["sampler"].sample(2, "1"), TypeError, r"Received: seed='1'"),
    ("sample-threads-str", lambda c: c["sampler"].sample(2, 1, num_threads="2"), TypeError, r"num_threads='2'"),
    ("sample-threads-negative", lambda c: c["sampler"].sample(2, 1, num_threads=-1), ValueError,
     r"num_threads=-1"),
    ("episode-indices-negative-batch", lambda c: c["sampler"].episode_indices(-2, 0), ValueError,
     r"meta_batch_size=-2"),
    ("episode-indices-seed-2**64", lambda c: c["sampler"].episode_indices(2, 2**64), ValueError, r"seed="),
    # FewShotClassification (the wrapper of EpisodeSampler)
    ("fsc-images-float", lambda c: km.tasks.FewShotClassification(IMAGES.astype(F32), LABELS), TypeError,
     r"images.dtype=float32"),
    ("fsc-images-strided", lambda c: km.tasks.FewShotClassification(np.repeat(IMAGES, 2, axis=1)[:, ::2], LABELS),
     ValueError, r"`images` to be C-contiguous"),
    ("fsc-images-empty", lambda c: km.tasks.FewShotClassification(np.zeros((0, 4, 4), np.uint8), np.zeros(0, int),
                                                                  ways=2), ValueError, r"split"),
    ("fsc-labels-float", lambda c: km.tasks.FewShotClassification(IMAGES, LABELS.astype(F32)), TypeError,
     r"labels.dtype=float32"),
    ("fsc-labels-nan", lambda c: km.tasks.FewShotClassification(IMAGES, np.full(12, NaN)), TypeError,
     r"labels.dtype=float64"),
    ("fsc-ways-float", lambda c: km.tasks.FewShotClassification(IMAGES, LABELS, ways=2.0), TypeError, r"ways=2.0"),
    ("fsc-classes-too-few", lambda c: km.tasks.FewShotClassification(IMAGES, LABELS, classes=3), ValueError,
     r"`labels` to lie in \[0, classes\)"),
    ("fsc-rotations-int", lambda c: km.tasks.FewShotClassification(IMAGES, LABELS, rotations=1), TypeError,
     r"rotations=1"),
    ("fsc-sample-zero", lambda c: c["tasks"].sample(0, 0), ValueError, r"meta_batch_size=0"),
    ("fsc-sample-seed-float", lambda c: c["tasks"].sample(2, 1.0), TypeError, r"seed=1.0"),
    ("fsc-as-dataset-zero", lambda c: c["tasks"].as_dataset(0), ValueError, r"meta_batch_size=0"),
    ("fsc-as-dataset-seed", lambda c: c["tasks"].as_dataset(2, seed=-1), ValueError, r"seed=-1"),
    # core RolloutBuffer
    ("core-buffer-zero-tasks", lambda c: _core.RolloutBuffer(0, 1, 4, 3), ValueError, r"num_tasks=0"),
    ("core-buffer-negative-horizon", lambda c: _core.RolloutBuffer(1, 1, -4, 3), ValueError, r"horizon=-4"),
    ("core-buffer-zero-obs", lambda c: _core.RolloutBuffer(1, 1, 4, 0), ValueError, r"obs_dim=0"),
    ("core-buffer-zero-action", lambda c: _core.RolloutBuffer(1, 1, 4, 3, 0), ValueError, r"action_dim=0"),
    ("core-buffer-zero-trial", lambda c: _core.RolloutBuffer(1, 1, 4, 3, episodes_per_trial=0), ValueError,
     r"episodes_per_trial=0"),
    ("core-buffer-overflowing-size", lambda c: _core.RolloutBuffer(2**40, 2**40, 2, 3), ValueError,
     r"num_tasks \* num_envs.*num_tasks=1099511627776"),
    ("core-buffer-float-horizon", lambda c: _core.RolloutBuffer(1, 1, 4.5, 3), TypeError, _PYBIND_TYPE),
    ("core-add-list", lambda c: c["buffer"].add(**{**_core_step(), "observations": [[[0.0] * 3] * 2]}), TypeError,
     r"`observations` to be a NumPy array"),
    ("core-add-float64", lambda c: c["buffer"].add(**{**_core_step(), "rewards": np.zeros((1, 2))}), TypeError,
     r"rewards.dtype=float64"),
    ("core-add-shape", lambda c: c["buffer"].add(**{**_core_step(), "actions": np.zeros((1, 2, 3), F32)}),
     ValueError, r"actions.shape=\(1, 2, 3\)"),
    ("core-add-empty", lambda c: c["buffer"].add(**_core_step(t=0)), ValueError, r"observations.shape=\(0, 2, 3\)"),
    ("core-add-strided", lambda c: c["buffer"].add(**{**_core_step(), "next_observations": np.zeros((1, 2, 6), F32)
                                                       [..., ::2]}), ValueError, r"`next_observations` to be C-contig"),
    ("core-add-int-terminated", lambda c: c["buffer"].add(**{**_core_step(), "terminated": np.zeros((1, 2), int)}),
     TypeError, r"terminated.dtype=int64"),
    ("core-add-valid-shape", lambda c: c["buffer"].add(**_core_step(), valid=np.ones(3, bool)), ValueError,
     r"valid.shape=\(3,\)"),
    ("core-add-task-out-of-range", lambda c: c["buffer"].add(**_core_step(), task=1), ValueError, r"task=1"),
    ("core-gae-float64", lambda c: c["buffer"].gae(np.zeros((1, 2, 4)), np.zeros((1, 2, 4), F32)), TypeError,
     r"values.dtype=float64"),
    ("core-gae-shape", lambda c: c["buffer"].gae(np.zeros((1, 2, 4), F32), np.zeros((2, 4), F32)), ValueError,
     r"next_values.shape=\(2, 4\)"),
    ("core-gae-gamma-nan", lambda c: c["buffer"].gae(np.zeros((1, 2, 4), F32), np.zeros((1, 2, 4), F32), NaN),
     ValueError, r"gamma=nan"),
    ("core-gae-lam-above-1", lambda c: c["buffer"].gae(np.zeros((1, 2, 4), F32), np.zeros((1, 2, 4), F32), 0.9,
                                                        1.5), ValueError, r"lam=1.5"),
    ("core-gae-out-not-a-pair", lambda c: c["buffer"].gae(*_values_pair(), out=np.zeros((1, 2, 4), F32)), TypeError,
     r"`out` to be None or a tuple \(advantages, returns\)"),
    ("core-gae-out-float64", lambda c: c["buffer"].gae(*_values_pair(), out=(np.zeros((1, 2, 4)), _zeros())),
     TypeError, r"out\[0\].dtype=float64"),
    ("core-gae-out-shape", lambda c: c["buffer"].gae(*_values_pair(), out=(_zeros(), np.zeros((1, 2, 3), F32))),
     ValueError, r"out\[1\].shape=\(1, 2, 3\)"),
    ("core-gae-out-read-only", lambda c: c["buffer"].gae(*_values_pair(), out=(_zeros(), _read_only(_zeros()))),
     ValueError, r"`out\[1\]` to be a writable array"),
    ("core-gae-out-is-values", lambda c: (lambda v: c["buffer"].gae(v, _zeros(), out=(_zeros(), v)))(_zeros()),
     ValueError, r"`out\[1\]` to share no memory"),
    ("core-gae-out-same-twice", lambda c: (lambda o: c["buffer"].gae(*_values_pair(), out=(o, o)))(_zeros()),
     ValueError, r"`out\[1\]` to share no memory"),
    ("core-returns-out-strided", lambda c: c["buffer"].discounted_returns(0.9, out=np.zeros((1, 2, 8), F32)[..., ::2]),
     ValueError, r"`out` to be C-contiguous"),
    ("core-returns-gamma-negative", lambda c: c["buffer"].discounted_returns(-0.1), ValueError, r"gamma=-0.1"),
    ("core-returns-next-values-list", lambda c: c["buffer"].discounted_returns(0.9, [0.0]), TypeError,
     r"`next_values` to be a NumPy array"),
    # RolloutBuffer wrapper
    ("buffer-horizon-float", lambda c: RolloutBuffer(1, 1, 4.5, (3,)), TypeError, r"horizon=4.5"),
    ("buffer-zero-envs", lambda c: RolloutBuffer(1, 0, 4, (3,)), ValueError, r"num_envs=0"),
    ("buffer-observation-shape-str", lambda c: RolloutBuffer(1, 1, 4, "ab"), TypeError, r"observation_shape='ab'"),
    ("buffer-observation-shape-zero", lambda c: RolloutBuffer(1, 1, 4, (3, 0)), ValueError,
     r"observation_shape=\(3, 0\)"),
    ("buffer-action-shape-float", lambda c: RolloutBuffer(1, 1, 4, (3,), (1.5,)), TypeError, r"action_shape="),
    ("buffer-max-episodes-negative", lambda c: RolloutBuffer(1, 1, 4, (3,), max_episodes_per_env=-1), ValueError,
     r"max_episodes_per_env=-1"),
    ("buffer-autoreset-unknown", lambda c: RolloutBuffer(1, 1, 4, (3,), autoreset_mode="bogus"), ValueError,
     r"autoreset_mode='bogus'"),
    ("buffer-add-object", lambda c: c["wrapped"].add(**{**_wrapper_step(), "observations": np.zeros((1, 2, 3),
                                                                                                     object)}),
     TypeError, r"observations.dtype=object"),
    ("buffer-add-float-terminated", lambda c: c["wrapped"].add(**{**_wrapper_step(), "terminated": np.zeros((1, 2))}),
     TypeError, r"`terminated` to have a bool dtype"),
    ("buffer-add-empty", lambda c: c["wrapped"].add(**{**_wrapper_step(), "rewards": np.zeros(0)}), ValueError,
     r"rewards.shape=\(0,\)"),
    ("buffer-add-int-continuous-actions", lambda c: c["wrapped"].add(**{**_wrapper_step(),
                                                                       "actions": np.zeros((1, 2, 2), int)}),
     TypeError, r"`actions` to have a floating dtype"),
    ("buffer-gae-list", lambda c: c["wrapped"].gae([0.0], np.zeros((1, 2, 4), F32)), TypeError,
     r"`values` to be a NumPy array"),
    ("buffer-data-is-read-only", lambda c: c["wrapped"].data()["rewards"].__setitem__(0, 1.0), ValueError,
     r"read-only"),
    # BatchedNavigation
    ("nav-zero-envs", lambda c: _core.BatchedNavigation(0), ValueError, r"num_envs=0"),
    ("nav-envs-2**62", lambda c: _core.BatchedNavigation(2**62), ValueError, r"num_envs=4611686018427387904"),
    ("nav-zero-horizon", lambda c: _core.BatchedNavigation(2, horizon=0), ValueError, r"horizon=0"),
    ("nav-max-action-nan", lambda c: _core.BatchedNavigation(2, max_action=NaN), ValueError, r"max_action=nan"),
    ("nav-max-action-inf", lambda c: _core.BatchedNavigation(2, max_action=Inf), ValueError, r"max_action=inf"),
    ("nav-tolerance-negative", lambda c: _core.BatchedNavigation(2, goal_tolerance=-1.0), ValueError,
     r"goal_tolerance=-1"),
    ("nav-goals-list", lambda c: c["nav"].set_goals([[0.0, 0.0]] * 2), TypeError, r"`goals` to be a NumPy array"),
    ("nav-goals-float64", lambda c: c["nav"].set_goals(np.zeros((2, 2))), TypeError, r"goals.dtype=float64"),
    ("nav-goals-shape", lambda c: c["nav"].set_goals(np.zeros((3, 2), F32)), ValueError, r"goals.shape=\(3"),
    ("nav-goals-scalar", lambda c: c["nav"].set_goals(np.array(1.0, F32)), ValueError, r"goals.shape=.*ndim=0"),
    ("nav-goals-nan", lambda c: c["nav"].set_goals(np.array([[0, 0], [NaN, 0]], F32)), ValueError,
     r"`goals` to be finite. Received: goals.flat\[2\]=nan"),
    ("nav-goals-inf", lambda c: c["nav"].set_goals(np.array([[0, Inf], [0, 0]], F32)), ValueError,
     r"goals.flat\[1\]=inf"),
    ("nav-goals-strided", lambda c: c["nav"].set_goals(np.zeros((2, 4), F32)[:, ::2]), ValueError,
     r"`goals` to be C-contiguous"),
    ("nav-step-float64", lambda c: c["nav"].step(np.zeros((2, 2))), TypeError, r"actions.dtype=float64"),
    ("nav-step-shape", lambda c: c["nav"].step(np.zeros((2, 3), F32)), ValueError, r"actions` to have shape \(2, 2\)"),
    ("nav-step-empty", lambda c: c["nav"].step(np.zeros((0, 2), F32)), ValueError, r"actions\.shape=\(0, 2\)"),
    ("nav-step-nan", lambda c: c["nav"].step(np.array([[0, 0], [0, NaN]], F32)), ValueError,
     r"`actions` to be free of NaN. Received: actions.flat\[3\]=nan"),
]


def _check_case(call, error, match):
    """Runs one native case outside pytest: the bad call must raise and change nothing."""
    import re

    ctx, twin = native_context(), native_context()
    try:
        call(ctx)
    except error as exc:
        if not re.search(match, str(exc)):
            raise AssertionError(f"message {str(exc)!r} does not match {match!r}") from exc
    else:
        raise AssertionError(f"no {error.__name__} raised")
    for got, want in zip(observe(ctx), observe(twin), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("call, error, match", [c[1:] for c in NATIVE_CASES], ids=[c[0] for c in NATIVE_CASES])
def test_native_bad_input(call, error, match):
    ctx, twin = native_context(), native_context()
    with pytest.raises(error, match=match):
        call(ctx)
    for got, want in zip(observe(ctx), observe(twin), strict=True):
        np.testing.assert_array_equal(got, want)


def test_case_ids_are_unique():
    ids = [c[0] for c in NATIVE_CASES]
    assert len(ids) == len(set(ids))


def run_native_cases():
    """Entry point of the subprocess run; returns the number of cases checked."""
    for case_id, call, error, match in NATIVE_CASES:
        try:
            _check_case(call, error, match)
        except AssertionError as exc:
            raise AssertionError(f"{case_id}: {exc}") from exc
    return len(NATIVE_CASES)


def test_native_cases_in_a_subprocess():
    """A crash (segfault, abort) in native code fails this test instead of killing pytest."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {here!r})
        import test_bad_input_catalogue as catalogue
        print("checked", catalogue.run_native_cases())
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"checked {len(NATIVE_CASES)}" in result.stdout


# --- accepted inputs with a documented behaviour --------------------------------------------


def test_read_only_inputs_are_accepted_where_only_read():
    images, labels, split = _read_only(IMAGES), _read_only(LABELS), _read_only(SPLIT)
    sampler = _core.EpisodeSampler(images, labels, split, ways=2, shots=1, queries=1)
    reference = native_context()["sampler"]
    for got, want in zip(sampler.sample(3, 4), reference.sample(3, 4)):
        np.testing.assert_array_equal(got, want)
    tasks = km.tasks.FewShotClassification(images, labels, ways=2, shots=1, queries=1)
    for got, want in zip(tasks.sample(2, 1), native_context()["tasks"].sample(2, 1)):
        np.testing.assert_array_equal(got, want)
    dataset = km.datasets.from_arrays(images, labels)
    np.testing.assert_array_equal(dataset.images, IMAGES)

    buffer, reference = _core.RolloutBuffer(1, 2, 4, 3, 2), _core.RolloutBuffer(1, 2, 4, 3, 2)
    step = _core_step(fill=0.5)
    buffer.add(**{k: _read_only(v) for k, v in step.items()}, valid=_read_only(np.ones((1, 2), bool)))
    reference.add(**step)
    values = _read_only(np.ones((1, 2, 4), F32))
    for got, want in zip(buffer.gae(values, values), reference.gae(np.ones((1, 2, 4), F32), np.ones((1, 2, 4), F32))):
        np.testing.assert_array_equal(got, want)
    assert all(not v.flags.writeable for v in buffer.data().values())

    nav = _core.BatchedNavigation(2)
    nav.set_goals(_read_only(np.ones((2, 2), F32)))
    nav.reset()
    obs, *_ = nav.step(_read_only(np.full((2, 2), 0.1, F32)))
    np.testing.assert_allclose(obs, 0.1)


def test_adding_to_a_full_row_changes_nothing():
    buffer = _core.RolloutBuffer(1, 2, 2, 3, 2)
    buffer.add(**_core_step(fill=1.0))
    buffer.add(**_core_step(fill=2.0), valid=np.array([[True, False]]))
    before = {k: np.array(v) for k, v in buffer.data().items()}
    with pytest.raises(ValueError, match=r"horizon=2 steps.*row \(task=0, env=0\) which is full"):
        buffer.add(**_core_step(fill=3.0))  # env 1 has room, env 0 does not: nothing is written
    for key, value in buffer.data().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    buffer.add(**_core_step(fill=3.0), valid=np.array([[False, True]]))
    assert buffer.data()["lengths"].tolist() == [[2, 2]]


def test_nan_rollout_data_stays_in_its_row():
    buffer = _core.RolloutBuffer(1, 2, 3, 1, 1)
    for _ in range(3):
        step = _core_step(o=1, a=1, fill=1.0)
        step["rewards"][0, 1] = NaN
        buffer.add(**step)
    returns = buffer.discounted_returns(0.9)
    assert np.isfinite(returns[0, 0]).all() and np.isnan(returns[0, 1]).all()
    values = np.ones((1, 2, 3), F32)
    values[0, 0, 1] = NaN
    advantages, _ = buffer.gae(values, np.ones((1, 2, 3), F32))
    assert np.isnan(advantages[0, 0, :2]).all() and np.isfinite(advantages[0, 0, 2])


def test_infinite_actions_are_clipped():
    nav = _core.BatchedNavigation(1, max_action=0.1)
    nav.reset()
    obs, *_ = nav.step(np.array([[Inf, -Inf]], F32))
    np.testing.assert_allclose(obs, [[0.1, -0.1]])


# --- task families and datasets ----------------------------------------------------------------

FAMILIES = [km.tasks.Sinusoid, km.tasks.Linear, km.tasks.Polynomial, km.tasks.StepFunction]
FAMILY_RANGES = {km.tasks.Sinusoid: "amplitude", km.tasks.Linear: "slope", km.tasks.Polynomial: "coefficients",
                 km.tasks.StepFunction: "levels"}

PYTHON_CASES = [
    *[(f"{family.__name__}-{bad}", (lambda family, kwargs: lambda: family(**kwargs))(family, kwargs), error, match)
      for family in FAMILIES
      for bad, kwargs, error, match in [
          ("shots-zero", dict(shots=0), ValueError, r"Received: shots=0"),
          ("queries-float", dict(queries=2.5), TypeError, r"Received: queries=2.5"),
          ("shots-bool", dict(shots=True), TypeError, r"Received: shots=True"),
          ("split-unknown", dict(split="eval"), ValueError, r"Received: split='eval'"),
          ("x-range-nan", dict(x_range=(NaN, 1.0)), ValueError, r"Received: x_range=\(nan"),
          ("x-range-str", dict(x_range="ab"), TypeError, r"Received: x_range='ab'"),
          ("range-reversed", {FAMILY_RANGES[family]: (2.0, 1.0)}, ValueError, FAMILY_RANGES[family]),
          ("range-infinite", {FAMILY_RANGES[family]: (0.0, Inf)}, ValueError, FAMILY_RANGES[family]),
          ("range-empty", {FAMILY_RANGES[family]: ()}, TypeError, FAMILY_RANGES[family] + "=()"),
      ]],
    *[(f"{family.__name__}-sample-{bad}", (lambda family, args: lambda: family().sample(*args))(family, args), error,
       match)
      for family in FAMILIES
      for bad, args, error, match in [
          ("zero", (0, 1), ValueError, r"meta_batch_size=0"),
          ("float-batch", (2.0, 1), TypeError, r"meta_batch_size=2.0"),
          ("negative-seed", (2, -1), ValueError, r"seed=-1"),
          ("seed-2**64", (2, 2**64), ValueError, r"seed="),
          ("array-seed", (2, np.array([1, 2])), TypeError, r"seed="),
      ]],
    ("Polynomial-degree-float", lambda: km.tasks.Polynomial(degree=1.0), TypeError, r"degree=1.0"),
    ("Polynomial-degree-65", lambda: km.tasks.Polynomial(degree=65), ValueError, r"degree=65"),
    ("step-seed-negative", lambda: km.tasks.step_seed(0, -1), ValueError, r"step=-1"),
    # datasets
    ("from-arrays-nan", lambda: km.datasets.from_arrays(np.full((4, 2, 2), NaN), np.arange(4)), ValueError,
     r"`images` to be finite"),
    ("from-arrays-empty", lambda: km.datasets.from_arrays(np.zeros((0, 2, 2), np.uint8), np.zeros(0, int)),
     ValueError, r"`images` to be non-empty"),
    ("from-arrays-float-above-1", lambda: km.datasets.from_arrays(np.full((4, 2, 2), 2.0), np.arange(4)),
     ValueError, r"images"),
    ("from-arrays-int-256", lambda: km.datasets.from_arrays(np.full((4, 2, 2), 256), np.arange(4)), ValueError,
     r"`images` to be in \[0, 255\]"),
    ("from-arrays-object", lambda: km.datasets.from_arrays(np.array([[["a"]]], object), np.arange(1)), TypeError,
     r"images.dtype=object"),
    ("from-arrays-labels-float", lambda: km.datasets.from_arrays(np.zeros((4, 2, 2), np.uint8), np.arange(4.0)),
     TypeError, r"labels.dtype=float64"),
    ("from-arrays-labels-short", lambda: km.datasets.from_arrays(np.zeros((4, 2, 2), np.uint8), np.arange(3)),
     ValueError, r"labels.shape=\(3,\)"),
    ("from-arrays-labels-missing", lambda: km.datasets.from_arrays(np.zeros((4, 2, 2), np.uint8)), ValueError,
     r"labels=None"),
    ("from-arrays-missing-npz", lambda: km.datasets.from_arrays("/nonexistent/file.npz"), FileNotFoundError,
     r"images='/nonexistent/file.npz'"),
    ("from-arrays-class-names-str", lambda: km.datasets.from_arrays(np.zeros((2, 2, 2), np.uint8), np.arange(2),
                                                                    class_names="ab"), (TypeError, ValueError),
     r"class_names"),
    ("omniglot-missing", lambda: km.datasets.omniglot("/nonexistent/omniglot"), FileNotFoundError,
     r"path='/nonexistent/omniglot'"),
    ("omniglot-path-int", lambda: km.datasets.omniglot(3), TypeError, r"Received: path=3"),
    ("omniglot-size-zero", lambda: km.datasets.omniglot("/tmp", image_size=0), ValueError, r"image_size=0"),
    ("omniglot-size-float", lambda: km.datasets.omniglot("/tmp", image_size=2.5), TypeError, r"image_size=2.5"),
    ("glyphs-drawings-zero", lambda: km.datasets.glyphs(drawings=0), ValueError, r"drawings=0"),
    ("glyphs-size-float", lambda: km.datasets.glyphs(image_size=2.5), TypeError, r"image_size=2.5"),
    ("glyphs-seed-negative", lambda: km.datasets.glyphs(seed=-1), ValueError, r"seed=-1"),
    ("glyphs-fonts-unknown", lambda: km.datasets.glyphs(fonts=["nofont"]), ValueError, r"fonts=\['nofont'\]"),
    ("glyphs-fonts-str", lambda: km.datasets.glyphs(fonts=3), TypeError, r"fonts=3"),
    ("glyphs-rotations-45", lambda: km.datasets.glyphs(rotations=(45,)), ValueError, r"rotations=\(45,\)"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in PYTHON_CASES], ids=[c[0] for c in PYTHON_CASES])
def test_python_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- learners ----------------------------------------------------------------------------------


def _mlp():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])


LEARNER_CLASSES = {"MAML": km.MAML, "FOMAML": km.FOMAML, "MetaSGD": km.MetaSGD, "ANIL": km.ANIL,
                   "Reptile": km.Reptile, "MAMLPlusPlus": km.MAMLPlusPlus, "MetaLSTM": km.MetaLSTM}
X = np.zeros((5, 1), F32)


def _pool(x=X, tasks=2):
    return km.tasks.TaskBatch(*(np.broadcast_to(x, (tasks,) + x.shape).copy(),) * 4)


def _y_spec():
    import tensorflow as tf

    return tf.TensorSpec([None, 1], tf.float32)


LEARNER_CASES = [
    ("fit-zero-batch", lambda m: m.fit(km.tasks.Sinusoid(), meta_batch_size=0, steps_per_epoch=1, verbose=0),
     ValueError, r"meta_batch_size=0", ()),
    ("fit-negative-seed", lambda m: m.fit(km.tasks.Sinusoid(), meta_batch_size=2, steps_per_epoch=1, seed=-1,
                                          verbose=0), ValueError, r"seed=-1", ()),
    ("fit-str-tasks", lambda m: m.fit("tasks", verbose=0), TypeError, r"tasks of type str", ()),
    ("fit-wrong-input-shape", lambda m: m.fit(_pool(np.zeros((5, 3), F32)), meta_batch_size=2, verbose=0),
     ValueError, r"model input shape \(1,\)", ()),
    ("fit-empty-pool", lambda m: m.fit(_pool(tasks=0), meta_batch_size=1, verbose=0), ValueError,
     r"non-empty meta-batch", ()),
    ("fit-no-steps-per-epoch", lambda m: m.fit(km.tasks.Sinusoid(), verbose=0), ValueError, r"steps_per_epoch", ()),
    ("fit-negative-epochs", lambda m: m.fit(km.tasks.Sinusoid(), meta_batch_size=2, epochs=-1, steps_per_epoch=1,
                                            verbose=0), ValueError, r"epochs=-1",
     ()),
    ("evaluate-negative-step", lambda m: m.evaluate(km.tasks.Sinusoid(), steps=[1, -1]), ValueError, r"steps=-1",
     ()),
    ("evaluate-zero-batches", lambda m: m.evaluate(km.tasks.Sinusoid(), steps=[0], num_batches=0), ValueError,
     r"num_batches=0", ()),
    ("evaluate-str-steps", lambda m: m.evaluate(km.tasks.Sinusoid(), steps="5"), TypeError, r"steps='5'",
     ()),
    ("adapt-mismatched", lambda m: m.adapt(X, np.zeros((4, 1), F32)), ValueError, r"same number of examples", ()),
    ("adapt-empty", lambda m: m.adapt(X[:0], X[:0]), ValueError, r"support_x.shape=\(0, 1\)", ()),
    ("adapt-wrong-features", lambda m: m.adapt(np.zeros((5, 3), F32), X), ValueError, r"support_x", ()),
    ("adapt-negative-steps", lambda m: m.adapt(X, X, steps=-1), ValueError, r"steps=-1", ()),
    ("adapt-zero-lr", lambda m: m.adapt(X, X, inner_lr=0), ValueError, r"inner_lr=0", ()),
    ("adapt-nan-lr", lambda m: m.adapt(X, X, inner_lr=NaN), ValueError, r"inner_lr=nan", ()),
    ("compile-bad-optimizer", lambda m: m.compile(optimizer=3), ValueError, r"optimizer", ()),
    ("compile-vectorize-str", lambda m: m.compile(vectorize="yes"), ValueError, r"vectorize='yes'", ()),
    ("compile-zero-steps-per-execution", lambda m: m.compile(steps_per_execution=0), ValueError,
     r"steps_per_execution=0",
     ()),
    ("compile-negative-memory-budget", lambda m: m.compile(memory_budget=-1), ValueError,
     r"memory_budget=-1", ()),
    ("compile-str-memory-budget", lambda m: m.compile(memory_budget="lots"), TypeError,
     r"memory_budget='lots'", ()),
    ("compile-bool-memory-budget", lambda m: m.compile(memory_budget=True), TypeError,
     r"memory_budget=True", ()),
    ("compile-unknown-second-order-mode", lambda m: m.compile(second_order_mode="fast"), ValueError,
     r"second_order_mode='fast'", ()),
    ("compile-truncated-zero", lambda m: m.compile(second_order_mode="truncated:0"), ValueError,
     r"second_order_mode='truncated:0'", ()),
    ("compile-int-second-order-mode", lambda m: m.compile(second_order_mode=2), TypeError,
     r"second_order_mode=2", ()),
    ("compile-budget-and-mode", lambda m: m.compile(memory_budget=2**30, second_order_mode="plain"),
     ValueError, r"not both", ()),
    ("export-negative-max-steps", lambda m: m.export_adaptive("never_written", max_steps=-1,
                                                              support_y_spec=_y_spec()),
     ValueError, r"max_steps=-1", ()),
    ("export-max-steps-below-steps", lambda m: m.export_adaptive("never_written", steps=3, max_steps=1,
                                                                 support_y_spec=_y_spec()),
     ValueError, r"max_steps=1", ()),
    ("export-unknown-format", lambda m: m.export_adaptive("never_written", format="onnx",
                                                          support_y_spec=_y_spec()),
     ValueError, r"format='onnx'", ()),
]


@pytest.fixture(scope="module")
def learner():
    maml = km.MAML(_mlp(), inner_lr=0.01)
    maml.compile(loss="mse")
    return maml


@pytest.mark.parametrize(
    "call, error, match",
    [pytest.param(*c[1:4], marks=c[4], id=c[0]) for c in LEARNER_CASES])
def test_learner_bad_input_keeps_weights(learner, call, error, match):
    before = [v.numpy() for v in learner.weights]
    step = int(learner.task_step.numpy())
    with pytest.raises(error, match=match):
        call(learner)
    for a, b in zip((v.numpy() for v in learner.weights), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(learner.task_step.numpy()) == step


@pytest.mark.parametrize("name", LEARNER_CLASSES)
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(inner_lr=-1.0), ValueError, r"inner_lr=-1.0"),
    (dict(inner_lr=NaN), ValueError, r"inner_lr=nan"),
    (dict(inner_lr="0.1"), TypeError, r"inner_lr='0.1'"),
    (dict(inner_steps=0), ValueError, r"inner_steps=0"),
    (dict(inner_steps=1.5), TypeError, r"inner_steps=1.5"),
    (dict(model=lambda x: x), TypeError, r"Expected `model` to be a Keras 3"),
])
def test_learner_constructor_bad_input(name, kwargs, error, match):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", None) or _mlp()
    with pytest.raises(error, match=match):
        LEARNER_CLASSES[name](model, **kwargs)


def test_adapt_with_nan_support_leaves_meta_weights_finite(learner):
    """NaN support data is not rejected (documented: divergence shows as NaN), but the
    meta-weights are never touched by adapt."""
    before = [v.numpy() for v in learner.weights]
    adapted = learner.adapt(np.full((5, 1), NaN, F32), X)
    assert not np.isfinite(adapted.predict(X, verbose=0)).all()
    for a, b in zip((v.numpy() for v in learner.weights), before, strict=True):
        np.testing.assert_array_equal(a, b)


# --- ProtoNet (no inner loop; classification labels) ---------------------------------------------

_SUPPORT = np.zeros((4, 1), F32)


def _protonet():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])
    protonet = km.ProtoNet(model)
    protonet.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return protonet


PROTONET_CASES = [
    ("adapt-inner-lr", lambda m: m.adapt(_SUPPORT, np.arange(4) % 2, inner_lr=0.1), TypeError,
     r"Expected no adaptation options for ProtoNet. Received: inner_lr=0.1"),
    ("evaluate-inner-lr", lambda m: m.evaluate(_pool(tasks=2), steps=[0], inner_lr=0.1), TypeError,
     r"Received: inner_lr=0.1"),
    ("adapt-float-ids", lambda m: m.adapt(_SUPPORT, np.array([0.0, 1.0, 0.0, 1.0], F32)), ValueError,
     r"support_y with dtype=float32 and shape=\(4,\)"),
    ("adapt-ids-column", lambda m: m.adapt(_SUPPORT, np.array([[0], [1], [0], [1]], np.int32)), ValueError,
     r"support_y with dtype=int32 and shape=\(4, 1\)"),
    ("adapt-string-labels", lambda m: m.adapt(_SUPPORT, np.array(list("abab"))), TypeError, r"dtype=string"),
    ("adapt-id-above-shots", lambda m: m.adapt(_SUPPORT, np.array([0, 1, 0, 7])), ValueError,
     r"class ids in \[0, 4\).*values in \[0, 7\]"),
    ("adapt-negative-id", lambda m: m.adapt(_SUPPORT, np.array([0, -1, 0, 1])), ValueError, r"values in \[-1, 1\]"),
    ("fit-float-support-ids", lambda m: m.fit(km.tasks.TaskBatch(np.zeros((2, 4, 1), F32), np.zeros((2, 4), F32),
                                                                 np.zeros((2, 4, 1), F32), np.zeros((2, 4), np.int32)),
                                              meta_batch_size=2, verbose=0), ValueError, r"support_y with dtype=float32"),
    ("compile-loss-on-probabilities", lambda m: m.compile(loss="sparse_categorical_crossentropy"), ValueError,
     r"Expected a loss on logits.*from_logits=False"),
    ("constructor-inner-lr", lambda m: km.ProtoNet(m.model, inner_lr=0.1), ValueError,
     r"Unrecognized keyword arguments passed to ProtoNet: \{'inner_lr': 0.1\}"),
]


@pytest.fixture(scope="module")
def protonet():
    return _protonet()


@pytest.mark.parametrize("call, error, match", [c[1:] for c in PROTONET_CASES], ids=[c[0] for c in PROTONET_CASES])
def test_protonet_bad_input_keeps_weights(protonet, call, error, match):
    before = [v.numpy() for v in protonet.weights]
    with pytest.raises(error, match=match):
        call(protonet)
    for a, b in zip((v.numpy() for v in protonet.weights), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(protonet.task_step.numpy()) == 0


# --- model-based learners: MANN, SNAIL (issue 19) -------------------------------------------------

_SEQ_X = np.zeros((4, 2), F32)
_SEQ_IDS = np.array([0, 1, 2, 0])


def _sequence_learners():
    import keras

    def embedding():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])

    learners = {"MANN": km.MANN(embedding(), 3, memory_slots=4, memory_size=2, controller_units=3,
                                read_heads=1),
                "SNAIL": km.SNAIL(embedding(), 3, blocks=[("tc", 2), ("attention", 2, 2)])}
    for learner in learners.values():
        learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return learners


SEQUENCE_CASES = [
    ("adapt-id-above-classes", lambda m: m.adapt(_SEQ_X, np.array([0, 1, 2, 3])), ValueError,
     r"class ids in \[0, 3\) \(num_classes=3\).*values in \[0, 3\]"),
    ("adapt-negative-id", lambda m: m.adapt(_SEQ_X, np.array([0, -1, 2, 0])), ValueError, r"values in \[-1, 2\]"),
    ("adapt-one-hot-width", lambda m: m.adapt(_SEQ_X, np.eye(4, dtype=F32)), ValueError,
     r"one-hot floats \[shots, 3\].*dtype=float32 and shape=\(4, 4\)"),
    ("adapt-float-ids", lambda m: m.adapt(_SEQ_X, _SEQ_IDS.astype(F32)), ValueError, r"shape=\(4,\)"),
    ("adapt-string-labels", lambda m: m.adapt(_SEQ_X, np.array(list("abca"))), TypeError, r"dtype=string"),
    ("adapt-mismatched", lambda m: m.adapt(_SEQ_X, _SEQ_IDS[:3]), ValueError, r"same number of examples"),
    ("adapt-wrong-features", lambda m: m.adapt(np.zeros((4, 5), F32), _SEQ_IDS), ValueError,
     r"model input shape \(2,\)"),
    ("adapt-inner-lr", lambda m: m.adapt(_SEQ_X, _SEQ_IDS, inner_lr=0.1), TypeError,
     r"Expected no adaptation options for (MANN|SNAIL). Received: inner_lr=0.1"),
    ("evaluate-inner-lr", lambda m: m.evaluate(km.tasks.TaskBatch(_SEQ_X[None], _SEQ_IDS[None], _SEQ_X[None],
                                                                  _SEQ_IDS[None]), steps=[0], inner_lr=0.1),
     TypeError, r"Received: inner_lr=0.1"),
    ("fit-id-above-classes", lambda m: m.fit(km.tasks.TaskBatch(_SEQ_X[None], _SEQ_IDS[None] + 1, _SEQ_X[None],
                                                                _SEQ_IDS[None]), meta_batch_size=1, verbose=0),
     ValueError, r"values in \[1, 3\]"),
    ("compile-loss-on-probabilities", lambda m: m.compile(loss="sparse_categorical_crossentropy"), ValueError,
     r"Expected a loss on logits: (MANN|SNAIL) predicts logits"),
]
MANN_CASES = [
    ("predict-sequence-mismatched", lambda m: m.predict_sequence(_SEQ_X, _SEQ_IDS[:2]), ValueError,
     r"`xs` and `ys`.*xs.shape=\(4, 2\), ys.shape=\(2,\)"),
    ("predict-sequence-id-above-classes", lambda m: m.predict_sequence(_SEQ_X, _SEQ_IDS + 1), ValueError,
     r"class ids in \[0, 3\)"),
]


@pytest.fixture(scope="module")
def sequence_learners():
    return _sequence_learners()


@pytest.mark.parametrize("name, call, error, match",
                         [pytest.param(n, *c[1:], id=f"{n}-{c[0]}") for n in ("MANN", "SNAIL") for c in SEQUENCE_CASES]
                         + [pytest.param("MANN", *c[1:], id=f"MANN-{c[0]}") for c in MANN_CASES])
def test_sequence_learner_bad_input_keeps_weights(sequence_learners, name, call, error, match):
    # The same check as ProtoNet's rows: the error, then weights and task counter unchanged.
    test_protonet_bad_input_keeps_weights(sequence_learners[name], call, error, match)


def _embedding():
    import keras

    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])


@pytest.mark.parametrize("make, error, match", [
    (lambda: km.MANN(_embedding(), 0), ValueError, r"num_classes=0"),
    (lambda: km.MANN(_embedding(), "5"), TypeError, r"num_classes='5'"),
    (lambda: km.MANN(lambda x: x, 5), TypeError, r"Expected `model` to be a Keras 3"),
    (lambda: km.MANN(_embedding(), 5, memory_slots=0), ValueError, r"memory_slots=0"),
    (lambda: km.MANN(_embedding(), 5, memory_size=2.0), TypeError, r"memory_size=2.0"),
    (lambda: km.MANN(_embedding(), 5, memory_slots=4, read_heads=5), ValueError,
     r"read_heads` <= memory_slots=4. Received: read_heads=5"),
    (lambda: km.MANN(_embedding(), 5, gamma=1.5), ValueError, r"gamma=1.5"),
    (lambda: km.MANN(_embedding(), 5, gamma="0.9"), TypeError, r"gamma='0.9'"),
    (lambda: km.SNAIL(_embedding(), 0), ValueError, r"num_classes=0"),
    (lambda: km.SNAIL(_embedding(), 5, shots=0), ValueError, r"shots=0"),
    (lambda: km.SNAIL(_embedding(), 5, blocks="tc"), TypeError, r"blocks='tc'"),
    (lambda: km.SNAIL(_embedding(), 5, blocks=[]), ValueError, r"at least one block"),
    (lambda: km.SNAIL(_embedding(), 5, blocks=[("conv", 3)]), ValueError, r"\('conv', 3\) in blocks"),
    (lambda: km.SNAIL(_embedding(), 5, blocks=[("attention", 4)]), ValueError, r"\('attention', 4\) in blocks"),
    (lambda: km.SNAIL(_embedding(), 5, blocks=[("tc", 0)]), ValueError, r"filters=0"),
    (lambda: km.rl.SNAILPolicy(2, num_actions=2, max_steps=0), ValueError, r"max_steps=0"),
    (lambda: km.rl.SNAILPolicy(2, num_actions=2, max_steps=2.5), ValueError, r"max_steps=2.5"),
    (lambda: km.rl.SNAILPolicy(2, num_actions=2, blocks=[("lstm", 3)]), ValueError, r"\('lstm', 3\) in blocks"),
    (lambda: km.rl.SNAILPolicy(2), ValueError, r"exactly one of `num_actions`"),
    (lambda: km.rl.SNAILPolicy(0, num_actions=2), ValueError, r"observation_dim=0"),
], ids=["mann-num-classes-zero", "mann-num-classes-str", "mann-not-a-model", "mann-slots-zero", "mann-size-float",
        "mann-more-heads-than-slots", "mann-gamma-above-one", "mann-gamma-str", "snail-num-classes-zero",
        "snail-shots-zero", "snail-blocks-str", "snail-blocks-empty", "snail-unknown-block", "snail-attention-sizes",
        "snail-filters-zero", "snail-policy-max-steps-zero", "snail-policy-max-steps-float",
        "snail-policy-unknown-block", "snail-policy-no-action-space", "snail-policy-observation-dim-zero"])
def test_sequence_learner_constructor_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()


# --- CLI ------------------------------------------------------------------------------------------

CLI_CASES = [
    ("no-command", [], r"required: command"),
    ("no-family", ["train"], r"required: family"),
    ("unknown-family", ["train", "mnist"], r"invalid choice: 'mnist'"),
    ("iterations-zero", ["train", "sinusoid", "--iterations", "0"], r"--iterations=0"),
    ("iterations-str", ["train", "sinusoid", "--iterations", "ten"], r"--iterations: invalid int value: 'ten'"),
    ("shots-zero", ["train", "sinusoid", "--shots", "0"], r"--shots=0"),
    ("ways-negative", ["train", "glyphs", "--ways", "-5"], r"--ways=-5"),
    ("meta-batch-zero", ["train", "glyphs", "--meta-batch-size", "0"], r"--meta-batch-size=0"),
    ("eval-lr-nan", ["train", "sinusoid", "--eval-lr", "nan"], r"--eval-lr=nan"),
    ("seed-float", ["train", "sinusoid", "--seed", "1.5"], r"--seed: invalid int value: '1.5'"),
    ("unknown-flag", ["train", "sinusoid", "--bogus"], r"unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv, match", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_argv(argv, match, capsys, tmp_path, monkeypatch):
    import re

    from keras_meta import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + (["--output", str(tmp_path / "out")] if argv[:1] == ["train"] and len(argv) > 1 else []))
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_cli_bad_argv_as_a_command():
    result = subprocess.run([sys.executable, "-m", "keras_meta.cli", "train", "sinusoid", "--shots", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Expected --shots to be positive. Received: --shots=0" in result.stderr


# --- dataset pixel formats: image modes and array dtypes without an unambiguous scale ---------


def _omniglot_with(root, array, fmt="TIFF"):
    """`omniglot()` over a one-image tree whose `.png` file holds `array` in `fmt`."""
    from PIL import Image

    folder = root / "omniglot" / "Alpha" / "character01"
    folder.mkdir(parents=True)
    Image.fromarray(array).save(folder / "0001_01.png", format=fmt)
    return km.datasets.omniglot(root / "omniglot")


def _npz_with(root, images):
    np.savez(root / "data.npz", images=images, labels=np.arange(len(images)))
    return km.datasets.from_arrays(root / "data.npz")


PIXEL_CASES = [
    ("omniglot-mode-F-0-255", lambda p: _omniglot_with(p, np.full((4, 4), 255.0, F32)), ValueError,
     r"mode 'F' pixels to be in \[0, 1\].*0001_01.png' of mode 'F' with values in \[255, 255\]"),
    ("omniglot-mode-F-nan", lambda p: _omniglot_with(p, np.full((4, 4), NaN, F32)), ValueError,
     r"mode 'F' pixels to be finite.*of mode 'F'"),
    ("omniglot-mode-I-16-bit-values", lambda p: _omniglot_with(p, np.full((4, 4), 65535, np.int32)), ValueError,
     r"mode 'I' pixels to be in \[0, 255\].*of mode 'I' with values in \[65535, 65535\]"),
    ("omniglot-mode-I-negative", lambda p: _omniglot_with(p, np.full((4, 4), -5, np.int16)), ValueError,
     r"of mode 'I' with values in \[-5, -5\]"),
    ("from-arrays-uint16-16-bit", lambda p: km.datasets.from_arrays(np.full((4, 2, 2), 65535, np.uint16),
                                                                    np.arange(4)), ValueError,
     r"divide 16-bit data by 257.*images.dtype=uint16"),
    ("from-arrays-bool", lambda p: km.datasets.from_arrays(np.ones((4, 2, 2), bool), np.arange(4)), TypeError,
     r"True could mean ink or paper.*images.dtype=bool"),
    ("from-arrays-float64-0-255", lambda p: km.datasets.from_arrays(np.full((4, 2, 2), 255.0), np.arange(4)),
     ValueError, r"float `images` to be in \[0, 1\].*images.dtype=float64 with values in \[255, 255\]"),
    ("from-arrays-float16-inf", lambda p: km.datasets.from_arrays(np.full((4, 2, 2), Inf, np.float16),
                                                                  np.arange(4)), ValueError,
     r"`images` to be finite.*float16"),
    ("from-arrays-int8-negative", lambda p: km.datasets.from_arrays(np.full((4, 2, 2), -1, np.int8), np.arange(4)),
     ValueError, r"images.dtype=int8 with values in \[-1, -1\]"),
    ("from-arrays-npz-uint16-16-bit", lambda p: _npz_with(p, np.full((4, 2, 2), 65535, np.uint16)), ValueError,
     r"images.dtype=uint16 with values in \[65535, 65535\]"),
    ("from-arrays-npz-bool", lambda p: _npz_with(p, np.zeros((4, 2, 2), bool)), TypeError, r"images.dtype=bool"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in PIXEL_CASES], ids=[c[0] for c in PIXEL_CASES])
def test_pixel_format_bad_input(call, error, match, tmp_path):
    with pytest.raises(error, match=match):
        call(tmp_path)


MAML_PP_CASES = [
    ("msl-epochs-negative", dict(msl_epochs=-1), ValueError, r"msl_epochs=-1"),
    ("msl-epochs-float", dict(msl_epochs=2.5), TypeError, r"msl_epochs=2.5"),
    ("msl-epochs-str", dict(msl_epochs="10"), TypeError, r"msl_epochs='10'"),
    ("first-order-epochs-negative", dict(first_order_epochs=-3), ValueError, r"first_order_epochs=-3"),
    ("first-order-epochs-bool", dict(first_order_epochs=True), TypeError, r"first_order_epochs=True"),
    ("steps-per-epoch-zero", dict(steps_per_epoch=0), ValueError, r"steps_per_epoch=0"),
    ("steps-per-epoch-none", dict(steps_per_epoch=None), TypeError, r"steps_per_epoch=None"),
    ("first-order-str", dict(first_order="no"), TypeError, r"first_order='no'"),
]


@pytest.mark.parametrize("kwargs, error, match", [c[1:] for c in MAML_PP_CASES],
                         ids=[c[0] for c in MAML_PP_CASES])
def test_maml_plus_plus_constructor_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        km.MAMLPlusPlus(_mlp(), **kwargs)


# --- RL shapes: policies, learners, envs and buffers refuse what they would broadcast ----------


def _rl_policy(units=2, action_dim=2, **kwargs):
    import keras

    from keras_meta.rl import GaussianPolicy

    keras.utils.set_random_seed(0)
    return GaussianPolicy(keras.Sequential([keras.Input((2,)), keras.layers.Dense(units)]), action_dim, **kwargs)


def _rl_same_step_add(final_obs):
    from gymnasium.vector import AutoresetMode

    buffer = RolloutBuffer(1, 1, 4, (3,), (2,), autoreset_mode=AutoresetMode.SAME_STEP)
    buffer.add(np.zeros((1, 3), F32), np.zeros((1, 2), F32), np.zeros(1, F32), np.array([True]), np.zeros(1, bool),
               np.zeros((1, 3), F32), {"final_obs": np.array([final_obs, None], object)[:1],
                                       "_final_obs": np.array([True])})


RL_SHAPE_CASES = [
    ("gaussian-body-too-narrow", lambda: _rl_policy(units=1).build_for(2), ValueError,
     r"`body` to output 2 units.*Received: a body with output shape \(1, 1\)"),
    ("gaussian-std-head-too-narrow", lambda: _rl_policy(units=3, std_head=True).build_for(2), ValueError,
     r"`body` to output 4 units"),
    ("gaussian-observation-width", lambda: _rl_policy().build_for(2).dist_params(None, np.zeros((3, 1), F32)),
     ValueError, r"Received: obs.shape=\(3, 1\)"),
    ("gaussian-observation-dim-zero", lambda: _rl_policy().build_for(0), ValueError, r"observation_dim=0"),
    ("maml-rl-policy-action-dim", lambda: km.rl.MAMLRL(_rl_policy(units=3, action_dim=3), km.rl.Navigation2D(5)),
     ValueError, r"action_dim=3.*action_space=Box"),
    ("rl2-policy-action-dim", lambda: km.rl.RL2(km.rl.RL2Policy(2, action_dim=3, units=4), km.rl.Navigation2D(5)),
     ValueError, r"action_dim=3"),
    ("rl2-policy-step-width", lambda: (lambda p: p.step(np.zeros((3, 1), F32), p.get_initial_state(3)))(
        km.rl.RL2Policy(1, num_actions=2, units=4, input_scale=(1, 1, 1, 1))), ValueError, r"x.shape=\(3, 1\)"),
    ("buffer-final-obs-scalar", lambda: _rl_same_step_add(np.float32(1.0)), ValueError,
     r"infos\['final_obs'\]\[0\].shape=\(\)"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in RL_SHAPE_CASES], ids=[c[0] for c in RL_SHAPE_CASES])
def test_rl_shape_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- RL degenerate arguments: refused up front, the learner left as it was -----------------


def _rl_maml(**kwargs):
    return km.rl.MAMLRL(_rl_policy(), km.rl.Navigation2D(3), **{"outer": "ppo", "ppo_epochs": 1, **kwargs})


def _rl_rl2():
    import keras

    keras.utils.set_random_seed(0)
    return km.rl.RL2(None, km.rl.BernoulliBandit(2), units=4)


def _rl_goal():
    return km.rl.Navigation2D(3).sample_tasks(1, seed=0)


RL_DEGENERATE_CASES = [
    # (id, learner factory or None, call(learner), error, match)
    ("maml-rl-negative-inner-lr", None, lambda _: _rl_maml(inner_lr=-0.1), ValueError, r"inner_lr=-0.1"),
    ("maml-rl-negative-inner-steps", None, lambda _: _rl_maml(inner_steps=-1), ValueError,
     r"inner_steps=-1"),
    ("maml-rl-zero-ppo-epochs", None, lambda _: _rl_maml(ppo_epochs=0), ValueError, r"ppo_epochs=0"),
    ("maml-rl-negative-seed", None, lambda _: _rl_maml(seed=-1), ValueError, r"seed=-1"),
    ("maml-rl-zero-horizon", None, lambda _: _rl_maml(horizon=0), ValueError, r"horizon=0"),
    ("maml-rl-zero-fvp-subsample", None, lambda _: _rl_maml(fvp_subsample=0), ValueError, r"fvp_subsample=0"),
    ("graph-iteration-zero-meta-batch", _rl_maml,
     lambda m: km.rl.GraphMetaIteration(m, km.rl.GraphNavigation2D(3), 0, 2), ValueError, r"meta_batch_size=0"),
    ("graph-iteration-other-horizon", _rl_maml,
     lambda m: km.rl.GraphMetaIteration(m, km.rl.GraphNavigation2D(4), 2, 2), ValueError, r"horizon=4"),
    ("rl2-negative-seed", None, lambda _: km.rl.RL2(None, km.rl.BernoulliBandit(2), units=4, seed=-1), ValueError,
     r"seed=-1"),
    ("maml-rl-fit-zero-epochs", _rl_maml, lambda m: m.fit(epochs=0, verbose=0), ValueError, r"epochs=0"),
    ("maml-rl-fit-zero-meta-batch", _rl_maml, lambda m: m.fit(meta_batch_size=0, verbose=0), ValueError,
     r"meta_batch_size=0"),
    ("maml-rl-fit-zero-episodes", _rl_maml, lambda m: m.fit(episodes_per_task=0, verbose=0), ValueError,
     r"episodes_per_task=0"),
    ("maml-rl-fit-negative-steps", _rl_maml, lambda m: m.fit(steps_per_epoch=-1, verbose=0), ValueError,
     r"steps_per_epoch=-1"),
    ("maml-rl-train-step-no-tasks", _rl_maml, lambda m: m.train_step([]), ValueError, r"tasks=\[\]"),
    ("maml-rl-train-step-zero-episodes", _rl_maml, lambda m: m.train_step(_rl_goal(), 0), ValueError,
     r"episodes_per_task=0"),
    ("maml-rl-collect-no-tasks", _rl_maml, lambda m: m.collect(m.stack_weights(m.policy.weights_list(), 1), [], 2, 0),
     ValueError, r"tasks=\[\]"),
    ("maml-rl-collect-zero-episodes", _rl_maml,
     lambda m: m.collect(m.stack_weights(m.policy.weights_list(), 1), _rl_goal(), 0, 0), ValueError, r"episodes=0"),
    ("maml-rl-adapt-negative-steps", _rl_maml, lambda m: m.adapt(task=_rl_goal()[0], steps=-1), ValueError,
     r"steps=-1"),
    ("maml-rl-adapt-zero-episodes", _rl_maml, lambda m: m.adapt(task=_rl_goal()[0], episodes=0), ValueError,
     r"episodes=0"),
    ("maml-rl-adapt-negative-seed", _rl_maml, lambda m: m.adapt(task=_rl_goal()[0], seed=-3), ValueError,
     r"seed=-3"),
    ("maml-rl-adapt-step-negative-lr", _rl_maml, lambda m: m.adapt_step(m.policy, None, step_size=-0.5),
     ValueError, r"step_size=-0.5"),
    ("maml-rl-meta-evaluate-no-tasks", _rl_maml, lambda m: m.meta_evaluate([]), ValueError, r"tasks=\[\]"),
    ("maml-rl-meta-evaluate-no-steps", _rl_maml, lambda m: m.meta_evaluate(_rl_goal(), steps=()), ValueError,
     r"steps=\[\]"),
    ("maml-rl-meta-evaluate-negative-step", _rl_maml, lambda m: m.meta_evaluate(_rl_goal(), steps=(0, -1)),
     ValueError, r"steps=-1"),
    ("maml-rl-meta-evaluate-zero-episodes", _rl_maml, lambda m: m.meta_evaluate(_rl_goal(), episodes=0),
     ValueError, r"episodes=0"),
    ("maml-rl-evaluate-episodes-zero-eval", _rl_maml,
     lambda m: m.evaluate_episodes(km.rl.Navigation2D(3), _rl_goal()[0], 1, 0), ValueError, r"eval_episodes=0"),
    ("maml-rl-evaluate-episodes-negative-adaptation", _rl_maml,
     lambda m: m.evaluate_episodes(km.rl.Navigation2D(3), _rl_goal()[0], -1, 1), ValueError,
     r"adaptation_episodes=-1"),
    ("maml-rl-stack-weights-zero-tasks", _rl_maml, lambda m: m.stack_weights(m.policy.weights_list(), 0),
     ValueError, r"num_tasks=0"),
    ("maml-rl-step-tasks-negative-step", _rl_maml,
     lambda m: m.step_tasks(m.stack_weights(m.policy.weights_list(), 1), None, -0.1), ValueError,
     r"step_size=-0.1"),
    ("maml-rl-collection-seed-past-the-outer-phase", _rl_maml, lambda m: m.collection_seed(0, 2), ValueError,
     r"phase=2"),
    ("maml-rl-collection-seed-negative-iteration", _rl_maml, lambda m: m.collection_seed(-1, 0), ValueError,
     r"iteration=-1"),
    ("maml-rl-adaptation-session-zero-envs", _rl_maml, lambda m: m.adaptation_session(0, lambda: None), ValueError,
     r"num_envs=0"),
    ("rl2-adaptation-session-seed-not-callable", _rl_rl2, lambda m: m.adaptation_session(2, 7), TypeError,
     r"next_seed of type int"),
    ("rl2-fit-zero-trials", _rl_rl2, lambda m: m.fit(trials_per_task=0, verbose=0), ValueError,
     r"trials_per_task=0"),
    ("rl2-fit-zero-epochs", _rl_rl2, lambda m: m.fit(epochs=0, verbose=0), ValueError, r"epochs=0"),
    ("rl2-train-step-no-tasks", _rl_rl2, lambda m: m.train_step([]), ValueError, r"tasks=\[\]"),
    ("rl2-train-step-zero-trials", _rl_rl2,
     lambda m: m.train_step(km.rl.BernoulliBandit(2).sample_tasks(1, seed=0), 0), ValueError, r"trials_per_task=0"),
    ("rl2-collect-no-tasks", _rl_rl2, lambda m: m.collect([]), ValueError, r"tasks=\[\]"),
    ("rl2-collect-negative-seed", _rl_rl2, lambda m: m.collect(km.rl.BernoulliBandit(2).sample_tasks(1, seed=0),
                                                               seed=-1), ValueError, r"seed=-1"),
    ("rl2-meta-evaluate-no-tasks", _rl_rl2, lambda m: m.meta_evaluate([]), ValueError, r"tasks=\[\]"),
    ("rl2-meta-evaluate-zero-episodes-per-trial", _rl_rl2,
     lambda m: m.meta_evaluate(km.rl.BernoulliBandit(2).sample_tasks(1, seed=0), episodes_per_trial=0),
     ValueError, r"episodes_per_trial=0"),
    ("rl2-evaluate-episodes-zero-eval", _rl_rl2,
     lambda m: m.evaluate_episodes(km.rl.BernoulliBandit(2), {"probs": [0.5, 0.5]}, 1, 0), ValueError,
     r"eval_episodes=0"),
    ("env-sample-zero-tasks", None, lambda _: km.rl.Navigation2D(3).sample_tasks(0, seed=0), ValueError, r"n=0"),
    ("env-sample-negative-tasks", None, lambda _: km.rl.BernoulliBandit(2).sample_tasks(-2, seed=0), ValueError,
     r"n=-2"),
    ("env-sample-float-tasks", None, lambda _: km.rl.Navigation2D(3).sample_tasks(2.5, seed=0), TypeError,
     r"n=2.5"),
    ("env-sample-negative-seed", None, lambda _: km.rl.Navigation2D(3).sample_tasks(2, seed=-1), ValueError,
     r"seed=-1"),
    ("tf-agents-collect-episodes-zero", None,
     lambda _: _tf_agents_drivers().collect_episodes(None, None, 0), ValueError, r"num_episodes=0"),
    ("tf-agents-collect-steps-negative", None,
     lambda _: _tf_agents_drivers().collect_steps(None, None, -5), ValueError, r"num_steps=-5"),
    ("tf-agents-driver-adapt-zero-episodes", None,
     lambda _: _tf_agents_drivers().driver_adapt(None, None, None, episodes=0), ValueError, r"episodes=0"),
    ("tf-agents-driver-adapt-negative-steps", None,
     lambda _: _tf_agents_drivers().driver_adapt(None, None, None, steps=-1), ValueError, r"steps=-1"),
    ("tf-agents-trial-driver-zero-trials", None,
     lambda _: _tf_agents_drivers().TrialDriver(None, None, 1, num_trials=0), ValueError, r"num_trials=0"),
    ("tf-agents-trial-driver-no-tasks", None,
     lambda _: _tf_agents_drivers().TrialDriver(None, None, 1, tasks=[]), ValueError, r"tasks=\[\]"),
]


def _tf_agents_drivers():
    return pytest.importorskip("keras_meta.integrations.tf_agents.drivers")


def _rl_learner_state(learner):
    return [v.numpy() for v in learner.training_state.weights]


@pytest.mark.parametrize("make, call, error, match", [c[1:] for c in RL_DEGENERATE_CASES],
                         ids=[c[0] for c in RL_DEGENERATE_CASES])
def test_rl_degenerate_argument(make, call, error, match):
    learner = make() if make is not None else None
    before = None if learner is None else _rl_learner_state(learner)
    with pytest.raises(error, match=match):
        call(learner)
    if learner is not None:
        for got, want in zip(_rl_learner_state(learner), before, strict=True):
            np.testing.assert_array_equal(got, want)


# --- in-graph task environments and their TF-Agents environment ------------------------------


def _graph_nav_state():
    return km.rl.GraphNavigation2D(horizon=3).reset(np.zeros((2, 2), F32), 1, seed=0)[0]


def _graph_bandit_state():
    return km.rl.GraphBernoulliBandit(3).reset(np.full((2, 3), 0.5, F32), 1, seed=0)[0]


def _graph_tf_env(**kwargs):
    graph_env = pytest.importorskip("keras_meta.integrations.tf_agents.graph_env")
    return graph_env.GraphTFEnvironment(**{"env": km.rl.GraphNavigation2D(3), "tasks": np.zeros((2, 2), F32),
                                           "envs_per_task": 1, **kwargs})


GRAPH_ENV_CASES = [
    ("graph-env-tasks-wrong-width", lambda: km.rl.GraphNavigation2D().reset(np.zeros((2, 3), F32), 1), ValueError,
     r"tasks.shape=\(2, 3\)"),
    ("graph-env-no-tasks", lambda: km.rl.GraphNavigation2D().reset(np.zeros((0, 2), F32), 1), ValueError,
     r"tasks.shape=\(0, 2\)"),
    ("graph-env-zero-envs", lambda: km.rl.GraphNavigation2D().reset(np.zeros((2, 2), F32), 0), ValueError,
     r"envs_per_task=0"),
    ("graph-env-float-envs", lambda: km.rl.GraphNavigation2D().reset(np.zeros((2, 2), F32), 2.5), TypeError,
     r"envs_per_task=2.5"),
    ("graph-env-negative-seed", lambda: km.rl.GraphNavigation2D().reset(np.zeros((2, 2), F32), 1, seed=-1),
     ValueError, r"seed=-1"),
    ("graph-env-float-tensor-seed", lambda: km.rl.GraphNavigation2D().reset(np.zeros((2, 2), F32), 1,
                                                                           seed=_tf().constant(1.0)),
     TypeError, r"seed of dtype float32"),
    ("graph-env-disabled-autoreset", lambda: km.rl.GraphNavigation2D(autoreset_mode="Disabled"), ValueError,
     r"autoreset_mode='Disabled'"),
    ("graph-env-unknown-autoreset", lambda: km.rl.GraphPointMass2D(autoreset_mode="sometimes"), ValueError,
     r"autoreset_mode='sometimes'"),
    ("graph-env-zero-horizon", lambda: km.rl.GraphNavigation2D(horizon=0), ValueError, r"horizon=0"),
    ("graph-env-action-shape", lambda: km.rl.GraphNavigation2D().step(_graph_nav_state(), np.zeros((2, 1, 3), F32)),
     ValueError, r"action.shape=\(2, 1, 3\)"),
    ("graph-env-transposed-action", lambda: km.rl.GraphNavigation2D().step(_graph_nav_state(), np.zeros((1, 2, 2), F32)),
     ValueError, r"action.shape=\(1, 2, 2\)"),
    ("graph-bandit-float-action", lambda: km.rl.GraphBernoulliBandit(3).step(_graph_bandit_state(), np.zeros((2, 1))),
     TypeError, r"action of dtype float64"),
    ("graph-bandit-arm-out-of-range", lambda: km.rl.GraphBernoulliBandit(3).step(_graph_bandit_state(), [[0], [3]]),
     ValueError, r"action=\[\[0\], \[3\]\]"),
    ("graph-bandit-probability-above-one",
     lambda: km.rl.GraphBernoulliBandit(2).reset(np.array([[0.5, 1.5]], F32), 1), ValueError, r"probs=\[0.5, 1.5\]"),
    ("graph-bandit-one-arm", lambda: km.rl.GraphBernoulliBandit(1), ValueError, r"num_arms=1"),
    ("graph-point-mass-zero-mass", lambda: km.rl.GraphPointMass2D().reset(np.array([[0.0, 0.5]], F32), 1),
     ValueError, r"'mass': 0.0"),
    ("graph-env-sample-zero-tasks", lambda: km.rl.GraphPointMass2D().sample_tasks(0, seed=0), ValueError, r"n=0"),
    ("graph-env-sample-negative-seed", lambda: km.rl.GraphNavigation2D().sample_tasks(2, seed=-1), ValueError,
     r"seed=-1"),
    ("graph-env-encode-no-tasks", lambda: km.rl.GraphNavigation2D().encode_tasks([]), ValueError, r"tasks=\[\]"),
    ("point-mass-negative-damping", lambda: km.rl.PointMass2D().set_task({"mass": 1.0, "damping": -1.0}),
     ValueError, r"'damping': -1.0"),
    ("point-mass-task-without-mass", lambda: km.rl.PointMass2D().set_task({"damping": 0.1}), ValueError,
     r"task=\{'damping': 0.1\}"),
    ("graph-tf-env-host-env", lambda: _graph_tf_env(env=km.rl.Navigation2D()), TypeError,
     r"env of type Navigation2D"),
    ("graph-tf-env-same-step", lambda: _graph_tf_env(env=km.rl.GraphNavigation2D(autoreset_mode="SameStep")),
     ValueError, r"autoreset_mode=SAME_STEP"),
    ("graph-tf-env-zero-envs", lambda: _graph_tf_env(envs_per_task=0), ValueError, r"envs_per_task=0"),
    ("graph-tf-env-set-tasks-shape", lambda: _graph_tf_env().set_tasks(np.zeros((3, 2), F32)), ValueError,
     r"tasks.shape=\(3, 2\)"),
    ("metaworld-agent-unknown-learner", lambda: km.rl.MetaWorldAgent("maml"), TypeError, r"learner of type str"),
    ("metaworld-agent-deterministic-str", lambda: km.rl.MetaWorldAgent(_rl_maml(), deterministic="yes"), TypeError,
     r"deterministic='yes'"),
    ("metaworld-agent-negative-seed", lambda: km.rl.MetaWorldAgent(_rl_maml(), seed=-1), ValueError, r"seed=-1"),
    ("metaworld-ml10-unknown-split", lambda: _needs_metaworld().MetaWorldML10(split="validation"), ValueError,
     r"split='validation'"),
    ("metaworld-eval-envs-zero-batch", lambda: _needs_metaworld().metaworld_eval_envs(meta_batch_size=0), ValueError,
     r"meta_batch_size=0"),
]


def _needs_metaworld():
    if not km.rl.metaworld_available()[0]:
        pytest.skip("needs metaworld with its pinned MuJoCo")
    return km.rl


def _tf():
    import tensorflow as tf

    return tf


@pytest.mark.parametrize("call, error, match", [c[1:] for c in GRAPH_ENV_CASES], ids=[c[0] for c in GRAPH_ENV_CASES])
def test_graph_env_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- km.tuning and km.rl.MetaGradientPG (issue 19): refused before anything is built --------


def _meta_gradient_pg(**kwargs):
    import keras

    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    return km.rl.MetaGradientPG(km.rl.GaussianPolicy(body, 2), km.rl.Navigation2D(3), **kwargs)


def _hypermodel(**kwargs):
    pytest.importorskip("keras_tuner")
    return km.tuning.MetaHyperModel(**{"build_learner": lambda hp: None,
                                       "validation_tasks": km.tasks.Sinusoid(split="test"), **kwargs})


ISSUE_19_CASES = [
    ("meta-gradient-gamma-one", lambda: _meta_gradient_pg(gamma=1.0), ValueError, r"gamma=1.0"),
    ("meta-gradient-lambda-negative", lambda: _meta_gradient_pg(gae_lambda=-0.5), ValueError, r"gae_lambda=-0.5"),
    ("meta-gradient-reference-gamma", lambda: _meta_gradient_pg(reference_gamma=1.5), ValueError,
     r"reference_gamma=1.5"),
    ("meta-gradient-meta-learn-unknown", lambda: _meta_gradient_pg(meta_learn=("delta",)), ValueError,
     r"meta_learn=\('delta',\)"),
    ("meta-gradient-meta-learn-str", lambda: _meta_gradient_pg(meta_learn="gamma"), ValueError, r"meta_learn='gamma'"),
    ("meta-gradient-negative-lr", lambda: _meta_gradient_pg(lr=-0.1), ValueError, r"lr=-0.1"),
    ("meta-gradient-negative-value-coef", lambda: _meta_gradient_pg(value_coef=-1), ValueError, r"value_coef=-1"),
    ("meta-gradient-zero-episodes", lambda: _meta_gradient_pg(episodes=0), ValueError, r"episodes=0"),
    ("meta-gradient-negative-seed", lambda: _meta_gradient_pg(seed=-1), ValueError, r"seed=-1"),
    ("meta-gradient-critic-unbuilt", lambda: _meta_gradient_pg(critic=__import__("keras").Sequential()), ValueError,
     r"built"),
    ("meta-gradient-fit-zero-epochs", lambda: _meta_gradient_pg().fit(epochs=0, verbose=0), ValueError, r"epochs=0"),
    ("meta-gradient-evaluate-zero-episodes", lambda: _meta_gradient_pg().evaluate_return(episodes=0), ValueError,
     r"episodes=0"),
    ("meta-gradient-adaptation-session-float-envs", lambda: _meta_gradient_pg().adaptation_session(1.5, lambda: None),
     TypeError, r"num_envs=1.5"),
    ("hypermodel-build-not-callable", lambda: _hypermodel(build_learner=3), TypeError, r"build_learner=3"),
    ("hypermodel-no-validation-tasks", lambda: _hypermodel(validation_tasks=None), ValueError,
     r"validation_tasks=None"),
    ("hypermodel-unknown-direction", lambda: _hypermodel(metric="r2"), ValueError, r"direction=None"),
    ("hypermodel-bad-direction", lambda: _hypermodel(direction="up"), ValueError, r"direction='up'"),
    ("hypermodel-metric-not-str", lambda: _hypermodel(metric=None), TypeError, r"metric=None"),
    ("hypermodel-negative-eval-steps", lambda: _hypermodel(eval_steps=-1), ValueError, r"eval_steps=-1"),
    ("hypermodel-zero-batches", lambda: _hypermodel(num_batches=0), ValueError, r"num_batches=0"),
    ("hypermodel-build-returns-no-learner", lambda: _hypermodel().build(None), TypeError, r"NoneType"),
    ("learner-of-plain-model", lambda: (pytest.importorskip("keras_tuner"), km.tuning.learner_of(
        __import__("keras").Sequential()))[1], TypeError, r"Sequential"),
    ("adapted-validation-not-a-learner", lambda: (pytest.importorskip("keras_tuner"), km.tuning.AdaptedValidation(
        object(), km.tasks.Sinusoid()))[1], TypeError, r"object"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in ISSUE_19_CASES], ids=[c[0] for c in ISSUE_19_CASES])
def test_issue_19_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- TF-Agents agents: constructors and train refuse bad input before any state changes -----


def _tf_agents():
    return pytest.importorskip("keras_meta.integrations.tf_agents")


def _agent_experience(rows, steps=3, first=True, bandit=False):
    """A `Trajectory` batch `rows` x `steps` shaped like a 2D-navigation (or bandit) collect spec."""
    from tf_agents.trajectories import trajectory

    step_type = np.ones((rows, steps), np.int32)
    step_type[:, 0] = 0 if first else 1
    obs = np.zeros((rows, steps, 1 if bandit else 2), F32)
    action = np.zeros((rows, steps), np.int64) if bandit else np.zeros((rows, steps, 2), F32)
    return trajectory.Trajectory(step_type, obs, action, (), np.ones((rows, steps), np.int32),
                                 np.zeros((rows, steps), F32), np.ones((rows, steps), F32))


def _bandit_specs():
    return _tf_agents().specs_for(km.rl.BernoulliBandit(2))


TF_AGENTS_AGENT_CASES = [
    # (id, learner factory or None, call(learner), error, match)
    ("maml-agent-not-a-maml-learner", None, lambda _: _tf_agents().MAMLAgent(_rl_rl2(), 2, 2), TypeError,
     r"`learner` to be a keras_meta.rl.MAMLRL. Received: learner of type RL2"),
    ("maml-agent-zero-tasks", _rl_maml, lambda m: _tf_agents().MAMLAgent(m, 0, 2), ValueError, r"num_tasks=0"),
    ("maml-agent-float-rows", _rl_maml, lambda m: _tf_agents().MAMLAgent(m, 2, 1.5), TypeError,
     r"rows_per_task=1.5"),
    ("maml-agent-rescaled-actions", None, lambda _: _tf_agents().MAMLAgent(_rl_maml(rescale_actions=True), 2, 2),
     ValueError, r"Received: learner with rescale_actions=True"),
    ("maml-agent-specs-of-another-env", _rl_maml, lambda m: _tf_agents().MAMLAgent(m, 2, 2, *_bandit_specs()),
     ValueError, r"match the learner's policy.*Received: observation shape \(1,\)"),
    ("maml-agent-one-spec", _rl_maml, lambda m: _tf_agents().MAMLAgent(m, 2, 2, time_step_spec=_bandit_specs()[0]),
     ValueError, r"both given or both None"),
    ("maml-agent-train-wrong-rows", _rl_maml, lambda m: _tf_agents().MAMLAgent(m, 2, 2).train(_agent_experience(3)),
     ValueError, r"num_tasks \* rows_per_task = 4 rows.*Received: 3 rows"),
    ("maml-agent-train-mid-episode", _rl_maml,
     lambda m: _tf_agents().MAMLAgent(m, 2, 2).train(_agent_experience(4, first=False)), ValueError,
     r"start an episode.*Received: step_type\[:, 0\]=\[1, 1, 1, 1\]"),
    ("maml-agent-train-one-step", _rl_maml,
     lambda m: _tf_agents().MAMLAgent(m, 2, 2).train(_agent_experience(4, steps=1)), ValueError,
     r"at least 2 time steps. Received: experience.step_type.shape=\(4, 1\)"),
    ("maml-agent-adapt-plain-policy", _rl_maml,
     lambda m: (lambda a: a.adapt(a.policy, _agent_experience(4)))(_tf_agents().MAMLAgent(m, 2, 2)), TypeError,
     r"`policy` to be a TaskBatchedPolicy.*Received: policy of type KerasPolicy"),
    ("maml-agent-adapt-negative-step-size", _rl_maml,
     lambda m: (lambda a: a.adapt(a.adaptive_policy(), _agent_experience(4), step_size=-1.0))(
         _tf_agents().MAMLAgent(m, 2, 2)), ValueError, r"step_size=-1.0"),
    ("maml-agent-adaptive-policy-zero-tasks", _rl_maml,
     lambda m: _tf_agents().MAMLAgent(m, 2, 2).adaptive_policy(num_tasks=0), ValueError, r"num_tasks=0"),
    ("rl2-agent-not-an-rl2-learner", _rl_maml, lambda m: _tf_agents().RL2Agent(m), TypeError,
     r"`learner` to be a keras_meta.rl.RL2. Received: learner of type MAMLRL"),
    ("rl2-agent-negative-seed", _rl_rl2, lambda m: _tf_agents().RL2Agent(m, seed=-2), ValueError, r"seed=-2"),
    ("rl2-agent-train-one-step", _rl_rl2,
     lambda m: _tf_agents().RL2Agent(m).train(_agent_experience(2, steps=1, bandit=True)), ValueError,
     r"at least 2 time steps"),
    ("agents-set-tasks-wrong-count", None,
     lambda _: _tf_agents().set_tasks(_tf_agents().task_batched_env(km.rl.Navigation2D(3), 2, 2), _rl_goal(), 2),
     ValueError, r"env.batch_size = 4. Received: 1 tasks x rows_per_task=2"),
    ("agents-task-batched-env-zero-rows", None,
     lambda _: _tf_agents().task_batched_env(km.rl.Navigation2D(3), 2, 0), ValueError, r"rows_per_task=0"),
]


@pytest.mark.parametrize("make, call, error, match", [c[1:] for c in TF_AGENTS_AGENT_CASES],
                         ids=[c[0] for c in TF_AGENTS_AGENT_CASES])
def test_tf_agents_agent_bad_input(make, call, error, match):
    test_rl_degenerate_argument(make, call, error, match)


def _generated():
    from keras_meta.tasks import generated

    return generated


GENERATED_TASK_CASES = [
    ("gan-zero-classes", lambda: _generated().ConditionalGAN(0), ValueError, r"num_classes=0"),
    ("gan-odd-image-shape", lambda: _generated().ConditionalGAN(3, image_shape=(27, 27, 1)), ValueError,
     r"image_shape=\(27, 27, 1\)"),
    ("gan-fit-label-out-of-range", lambda: _generated().ConditionalGAN(2, noise_dim=2, code_dim=2, filters=2).fit(
        np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 0])), ValueError, r"labels in \[0, 2\)"),
    ("gan-fit-zero-steps", lambda: _generated().ConditionalGAN(2, noise_dim=2, code_dim=2, filters=2).fit(
        np.zeros((4, 28, 28), np.uint8), np.zeros(4, int), steps=0), ValueError, r"steps=0"),
    ("generated-classes-not-a-gan", lambda: _generated().GeneratedClasses(object()), TypeError, r"object"),
    ("generated-classes-negative-noise", lambda: _generated().GeneratedClasses(
        _generated().ConditionalGAN(2, noise_dim=2, code_dim=2, filters=2), code_noise=-1.0), ValueError,
     r"code_noise=-1.0"),
    ("mixed-tasks-fraction", lambda: _generated().MixedTasks(km.tasks.Sinusoid(), km.tasks.Sinusoid(), 1.5),
     ValueError, r"fraction=1.5"),
    ("mixed-tasks-not-a-family", lambda: _generated().MixedTasks(km.tasks.Sinusoid(), [1]), TypeError,
     r"generated of type list"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in GENERATED_TASK_CASES],
                         ids=[c[0] for c in GENERATED_TASK_CASES])
def test_generated_tasks_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- MetaLSTM, learned update rules and learned optimizers --------------------------------------


def _rule(**kwargs):
    return km.optimizers.LearnedRule(hidden_units=2, num_layers=1, **kwargs)


def _rule_file(tmp_path, **arrays):
    path = tmp_path / "rule.npz"
    np.savez(path, **arrays)
    return path


LEARNED_RULE_CASES = [
    ("meta-lstm-gate-at-one", lambda: km.MetaLSTM(_mlp(), inner_lr=1.0), ValueError, r"inner_lr=1.0"),
    ("meta-lstm-inner-rule", lambda: km.MetaLSTM(_mlp(), inner_rule=_rule()), TypeError,
     r"no `inner_rule` for MetaLSTM"),
    ("meta-sgd-inner-rule", lambda: km.MetaSGD(_mlp(), inner_rule=_rule()), TypeError, r"no `inner_rule` for MetaSGD"),
    ("maml-inner-rule-str", lambda: km.MAML(_mlp(), inner_rule="adam"), TypeError, r"inner_rule of type str"),
    ("rule-kind", lambda: _rule(kind="gru"), ValueError, r"kind='gru'"),
    ("rule-zero-units", lambda: km.optimizers.LearnedRule(hidden_units=0), ValueError, r"hidden_units=0"),
    ("rule-float-layers", lambda: km.optimizers.LearnedRule(num_layers=1.5), TypeError, r"num_layers=1.5"),
    ("rule-negative-scale", lambda: _rule(output_scale=-0.1), ValueError, r"output_scale=-0.1"),
    ("rule-negative-seed", lambda: _rule(seed=-1), ValueError, r"seed=-1"),
    ("optimizer-rule-str", lambda: km.optimizers.Learned("lstm"), TypeError, r"rule of type str"),
    ("quadratics-zero-dim", lambda: km.optimizers.Quadratics(dim=0), ValueError, r"dim=0"),
    ("quadratics-negative-scale", lambda: km.optimizers.Quadratics(scale=-1.0), ValueError, r"scale=-1.0"),
    ("mlp-regression-activation", lambda: km.optimizers.MLPRegression(activation="elu"), ValueError,
     r"activation='elu'"),
    ("mlp-regression-zero-points", lambda: km.optimizers.MLPRegression(points=0), ValueError, r"points=0"),
    ("stacked-zero-size", lambda: km.optimizers.Stacked(km.optimizers.Quadratics(), 0), ValueError, r"size=0"),
    ("unrolled-zero-steps", lambda: km.optimizers.unrolled_loss(
        _rule().update_rule(), km.optimizers.Quadratics(dim=2), [np.zeros(2, F32)], (np.eye(2, dtype=F32),
                                                                                   np.zeros(2, F32)), 0),
     ValueError, r"steps=0"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in LEARNED_RULE_CASES],
                         ids=[c[0] for c in LEARNED_RULE_CASES])
def test_learned_rule_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_rule_file_without_a_rule_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"written by LearnedRule.save.*\['weight_0'\]"):
        km.optimizers.LearnedRule.from_file(_rule_file(tmp_path, weight_0=np.zeros(2)))
    with pytest.raises(ValueError, match=r"written by LearnedRule.save"):
        km.optimizers.Learned.from_file(_rule_file(tmp_path, weight_0=np.zeros(2)))


META_TRAIN_CASES = [
    ("rule-not-a-rule", dict(rule="lstm"), TypeError, r"rule of type str"),
    ("problems-not-a-family", dict(problems=km.tasks.Sinusoid()), TypeError, r"problems of type Sinusoid"),
    ("zero-iterations", dict(iterations=0), ValueError, r"iterations=0"),
    ("zero-meta-batch", dict(meta_batch_size=0), ValueError, r"meta_batch_size=0"),
    ("horizon-not-multiple", dict(horizon=10, unroll=4), ValueError, r"horizon=10, unroll=4"),
    ("zero-unroll", dict(unroll=0), ValueError, r"unroll=0"),
    ("second-order-str", dict(second_order="no"), TypeError, r"second_order='no'"),
    ("negative-seed", dict(seed=-2), ValueError, r"seed=-2"),
    ("frozen-rule", dict(trainable=False), ValueError, r"trainable=False"),
]


@pytest.mark.parametrize("kwargs, error, match", [c[1:] for c in META_TRAIN_CASES],
                         ids=[c[0] for c in META_TRAIN_CASES])
def test_meta_train_bad_input_trains_nothing(kwargs, error, match):
    kwargs = dict(kwargs)
    rule = _rule()
    rule.trainable = kwargs.pop("trainable", True)
    before = rule.get_weights()
    arguments = dict(rule=rule, problems=km.optimizers.Quadratics(dim=2), iterations=1, meta_batch_size=1,
                     horizon=4, unroll=2)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        km.optimizers.meta_train(**arguments)
    for a, b in zip(rule.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
