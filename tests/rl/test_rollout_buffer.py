import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from keras_meta import _core
from keras_meta._twin import rollout as twin
from keras_meta.rl import RolloutBuffer


def _random_buffer(rng, T=3, E=4, H=12, per_trial=2):
    buf = RolloutBuffer(T, E, H, (2,), (2,), episodes_per_trial=per_trial, max_episodes_per_env=None)
    for _ in range(H + 3):
        buf.add(rng.normal(size=(T, E, 2)), rng.normal(size=(T, E, 2)).astype(np.float32),
                rng.normal(size=(T, E)), rng.random((T, E)) < 0.15, rng.random((T, E)) < 0.15,
                rng.normal(size=(T * E, 2)))
    return buf


@pytest.fixture(params=["scalar", "avx2"])
def kernel(request):
    """Runs a test with each kernel of csrc/discount.h that this CPU has."""
    if request.param not in _core._backward_kernels():
        pytest.skip(f"this CPU has no {request.param} kernel")
    previous = _core._backward_kernel()
    _core._set_backward_kernel(request.param)
    yield request.param
    _core._set_backward_kernel(previous)


def test_choosing_an_unavailable_kernel_is_refused():
    previous = _core._backward_kernel()
    with pytest.raises(ValueError, match="Received: name='sse9'"):
        _core._set_backward_kernel("sse9")
    assert _core._backward_kernel() == previous
    assert "scalar" in _core._backward_kernels()


@pytest.mark.parametrize("trial_level", [False, True])
@pytest.mark.parametrize("horizon", [12, 61])
def test_gae_and_returns_match_twin(trial_level, horizon, kernel):
    # Horizon 61 gives rows of many lengths, so blocks of four or eight steps meet every kind of cut.
    rng = np.random.default_rng(horizon)
    buf = _random_buffer(rng, H=horizon)
    d = buf.data()
    assert d["terminated"].any() and d["truncated"].any() and (d["masks"] == 0).any()
    values = rng.normal(size=d["rewards"].shape).astype(np.float32)
    next_values = rng.normal(size=d["rewards"].shape).astype(np.float32)
    adv, ret = buf.gae(values, next_values, gamma=0.9, lam=0.8, trial_level=trial_level)
    adv_t, ret_t = twin.gae(d, values, next_values, 0.9, 0.8, trial_level, 2)
    np.testing.assert_allclose(adv, adv_t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ret, ret_t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(buf.discounted_returns(0.9, next_values, trial_level),
                               twin.discounted_returns(d, 0.9, next_values, trial_level, 2), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("horizon", [3, 13, 16])
def test_a_row_never_reads_the_next_rows_data(horizon, kernel):
    # Rows of every length from 0 to the horizon; the vector kernel reads past a short row's
    # end into the next row's storage (and past a row of 3 steps into several rows). Infinite
    # values and rewards there must not reach the row: only its own steps count.
    rows = horizon + 1
    buf = _core.RolloutBuffer(1, rows, horizon, 1, 1)
    zeros = np.zeros((1, rows, 1), np.float32)
    for step in range(horizon):
        buf.add(zeros, zeros, np.ones((1, rows), np.float32), np.zeros((1, rows), bool), np.zeros((1, rows), bool),
                zeros, valid=np.arange(rows)[None] > step)
    d = buf.data()
    np.testing.assert_array_equal(d["lengths"][0], np.minimum(np.arange(rows), horizon))
    values = np.where(d["masks"] > 0, 0.5, np.inf).astype(np.float32)
    next_values = np.where(d["masks"] > 0, 2.0, np.nan).astype(np.float32)
    adv, ret = buf.gae(values, next_values, 0.9, 0.8, False)
    adv_t, ret_t = twin.gae(d, np.where(d["masks"] > 0, values, 0), np.where(d["masks"] > 0, next_values, 0), 0.9, 0.8)
    np.testing.assert_allclose(adv, adv_t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ret, ret_t, rtol=1e-6, atol=1e-6)
    assert (adv[d["masks"] == 0] == 0).all() and (ret[d["masks"] == 0] == 0).all()


def test_random_small_buffers_match_twin(kernel):
    # Many shapes around the vector width: every horizon from 1 to 20, rows of random lengths
    # and episode ends, with and without bootstrap values and trials.
    rng = np.random.default_rng(11)
    for horizon in range(1, 21):
        T, E = rng.integers(1, 4, size=2)
        buf = _core.RolloutBuffer(T, E, horizon, 1, 1, False, 2)
        zeros = np.zeros((T, E, 1), np.float32)
        for _ in range(horizon):
            buf.add(zeros, zeros, rng.normal(size=(T, E)).astype(np.float32), rng.random((T, E)) < 0.2,
                    rng.random((T, E)) < 0.2, zeros, valid=rng.random((T, E)) < 0.8)
        d = buf.data()
        values, next_values = rng.normal(size=(2, T, E, horizon)).astype(np.float32)
        for trial_level in (False, True):
            for got, want in zip(buf.gae(values, next_values, 0.95, 0.9, trial_level),
                                 twin.gae(d, values, next_values, 0.95, 0.9, trial_level, 2)):
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            for bootstrap in (None, next_values):
                np.testing.assert_allclose(buf.discounted_returns(0.95, bootstrap, trial_level),
                                           twin.discounted_returns(d, 0.95, bootstrap, trial_level, 2),
                                           rtol=1e-6, atol=1e-6)


def test_long_horizon_precision(kernel):
    # The avx2 kernel computes in float32, so rounding (gamma's own included) compounds over
    # the effective horizon 1 / (1 - gamma * lam): here 1,000 steps, the worst case of RL use.
    rng = np.random.default_rng(0)
    buf = RolloutBuffer(1, 4, 1000, (1,), (1,))
    for _ in range(1000):
        buf.add(np.zeros((1, 4, 1)), np.zeros((1, 4, 1), np.float32), rng.normal(1, 1, (1, 4)),
                np.zeros((1, 4), bool), np.zeros((1, 4), bool), np.zeros((1, 4, 1)))
    d = buf.data()
    values = (10 * rng.normal(size=(1, 4, 1000))).astype(np.float32)
    adv, _ = buf.gae(values, values, 0.999, 1.0)
    adv_t, _ = twin.gae(d, values, values, 0.999, 1.0)
    scale = np.abs(adv_t).max()
    assert np.abs(adv - adv_t).max() <= 2e-5 * scale
    if kernel == "scalar":  # double precision: the twin's result to the last float32 rounding
        np.testing.assert_array_equal(adv, adv_t)


def test_hand_computed_termination_and_truncation(kernel):
    # One row: steps 0-1 end by termination, 2-3 by truncation, step 4 is cut by the buffer.
    # The avx2 kernel takes the row as one block of eight steps, the last three past its end.
    buf = RolloutBuffer(1, 1, 6, (1,), (1,), autoreset_mode=AutoresetMode.SAME_STEP)
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0]
    term = [False, True, False, False, False]
    trunc = [False, False, False, True, False]
    for r, te, tr in zip(rewards, term, trunc):
        buf.add(np.zeros((1, 1, 1)), np.zeros((1, 1, 1), np.float32), np.full((1, 1), r),
                np.full((1, 1), te), np.full((1, 1), tr), np.zeros((1, 1, 1)))
    g, lam = 0.5, 0.5
    v = np.array([[[0.1, 0.2, 0.3, 0.4, 0.5, 0.0]]], np.float32)
    nv = np.array([[[9.0, 9.0, 9.0, 10.0, 20.0, 0.0]]], np.float32)
    # Returns: termination bootstraps 0, truncation bootstraps V(final)=10, the cut row 20.
    r4 = 5 + g * 20
    r3 = 4 + g * 10
    r2 = 3 + g * r3
    r1 = 2.0
    r0 = 1 + g * r1
    np.testing.assert_allclose(buf.discounted_returns(g, nv)[0, 0], [r0, r1, r2, r3, r4, 0], rtol=1e-6)
    np.testing.assert_allclose(buf.discounted_returns(g)[0, 0], [2, 2, 3 + g * 4, 4, 5, 0], rtol=1e-6)
    d4 = 5 + g * 20 - 0.5
    d3 = 4 + g * 10 - 0.4
    d2 = 3 + g * 0.4 - 0.3
    d1 = 2 + 0 - 0.2
    d0 = 1 + g * 0.2 - 0.1
    a4, a3 = d4, d3
    a2 = d2 + g * lam * a3
    a1 = d1
    a0 = d0 + g * lam * a1
    adv, ret = buf.gae(v, nv, g, lam)
    np.testing.assert_allclose(adv[0, 0], [a0, a1, a2, a3, a4, 0], rtol=1e-6)
    np.testing.assert_allclose(ret[0, 0, :5], np.array([a0, a1, a2, a3, a4]) + v[0, 0, :5], rtol=1e-6)


def test_extraction_shapes_masks_ids_and_views():
    buf = RolloutBuffer(2, 3, 5, (4,), (2,), episodes_per_trial=2)
    for step in range(4):
        done = np.zeros((2, 3), bool)
        done[0, 0] = step == 0  # row (0, 0): a one-step episode, then a reset step
        buf.add(np.full((6, 4), step, np.float32), np.zeros((2, 3, 2), np.float32), np.ones(6, np.float32),
                done, np.zeros((2, 3), bool), np.full((6, 4), step + 1, np.float32))
    d = buf.data()
    assert d["observations"].shape == (2, 3, 5, 4) and d["actions"].shape == (2, 3, 5, 2)
    assert d["masks"].dtype == np.float32 and d["terminated"].dtype == np.bool_
    # NEXT_STEP: the reset step of row (0, 0) (step 1) was skipped.
    np.testing.assert_array_equal(d["lengths"], [[3, 4, 4], [4, 4, 4]])
    np.testing.assert_array_equal(d["masks"][0, 0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(d["observations"][0, 0, :3, 0], [0, 2, 3])
    np.testing.assert_array_equal(d["episode_ids"][0, 0, :3], [0, 1, 1])
    np.testing.assert_array_equal(d["episode_steps"][0, 0, :3], [0, 0, 1])
    np.testing.assert_array_equal(d["trial_ids"][0, 0, :3], [0, 0, 0])
    assert len(buf) == 23
    assert not d["rewards"].flags.writeable
    assert np.shares_memory(d["rewards"], buf.data()["rewards"])  # views, not copies
    np.testing.assert_allclose(buf.episode_returns(), [11 / 4, 12 / 3])


def test_same_step_reads_final_observation():
    buf = RolloutBuffer(1, 2, 4, (1,), (1,), autoreset_mode=AutoresetMode.SAME_STEP)
    final = np.empty(2, object)
    final[0] = np.array([7.0])
    buf.add(np.zeros((2, 1)), np.zeros((2, 1), np.float32), np.ones(2), np.array([False, False]),
            np.array([True, False]), np.array([[0.0], [1.0]]),
            {"final_obs": final, "_final_obs": np.array([True, False])})
    buf.add(np.zeros((2, 1)), np.zeros((2, 1), np.float32), np.ones(2), np.zeros(2, bool), np.zeros(2, bool),
            np.ones((2, 1)))
    d = buf.data()
    np.testing.assert_array_equal(d["next_observations"][0, :, 0, 0], [7.0, 1.0])
    np.testing.assert_array_equal(d["lengths"], [[2, 2]])  # SAME_STEP has no reset step to skip


def test_bad_inputs_raise_clear_errors():
    buf = RolloutBuffer(2, 3, 4, (4,), (2,))
    ok = dict(observations=np.zeros((2, 3, 4)), actions=np.zeros((2, 3, 2), np.float32), rewards=np.zeros((2, 3)),
              terminated=np.zeros((2, 3), bool), truncated=np.zeros((2, 3), bool), next_observations=np.zeros((6, 4)))
    with pytest.raises(ValueError, match=r"Expected `observations` to have shape .*Received: observations.shape=\(2, 3, 5\)"):
        buf.add(**{**ok, "observations": np.zeros((2, 3, 5))})
    with pytest.raises(TypeError, match="Expected `observations` to have a floating"):
        buf.add(**{**ok, "observations": np.array([["a"] * 4] * 6)})
    with pytest.raises(ValueError, match="Expected `actions` to have shape"):
        buf.add(**{**ok, "actions": np.zeros((2, 3, 3), np.float32)})
    with pytest.raises(TypeError, match="Expected `terminated` to have a bool dtype"):
        buf.add(**{**ok, "terminated": np.zeros((2, 3))})
    discrete = RolloutBuffer(1, 2, 4, (4,), discrete=True)
    with pytest.raises(TypeError, match="Expected `actions` to have a integer"):
        discrete.add(np.zeros((2, 4)), np.zeros(2, np.float32), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool),
                     np.zeros((2, 4)))
    core = _core.RolloutBuffer(1, 2, 1, 4, 2)
    with pytest.raises(TypeError, match="Expected `observations` to have dtype float32. Received: observations.dtype=float64"):
        core.add(np.zeros((1, 2, 4)), np.zeros((1, 2, 2), np.float32), np.zeros((1, 2), np.float32),
                 np.zeros((1, 2), bool), np.zeros((1, 2), bool), np.zeros((1, 2, 4), np.float32))
    args = (np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 2), np.float32), np.zeros((1, 2), np.float32),
            np.zeros((1, 2), bool), np.zeros((1, 2), bool), np.zeros((1, 2, 4), np.float32))
    core.add(*args)
    with pytest.raises(ValueError, match="Expected at most horizon=1 steps"):
        core.add(*args)
    with pytest.raises(ValueError, match="Expected `values` to have shape"):
        core.gae(np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 1), np.float32), 0.9, 0.9, False)
    with pytest.raises(ValueError, match="Expected `gamma` to be in"):
        core.discounted_returns(1.5, None, False)


def test_disabled_autoreset_is_refused():
    with pytest.raises(ValueError, match="Received: autoreset_mode=DISABLED"):
        RolloutBuffer(1, 1, 4, (2,), (2,), autoreset_mode=AutoresetMode.DISABLED)


def test_out_arrays_are_filled_and_returned():
    rng = np.random.default_rng(5)
    buf = _random_buffer(rng, H=20)
    values = rng.normal(size=buf.data()["rewards"].shape).astype(np.float32)
    next_values = rng.normal(size=values.shape).astype(np.float32)
    out = (np.full_like(values, np.nan), np.full_like(values, np.nan))
    adv, ret = buf.gae(values, next_values, 0.9, 0.8, out=out)
    assert adv is out[0] and ret is out[1]
    for got, want in zip(out, buf.gae(values, next_values, 0.9, 0.8)):
        np.testing.assert_array_equal(got, want)
    returns_out = np.full_like(values, np.nan)
    assert buf.discounted_returns(0.9, next_values, out=returns_out) is returns_out
    np.testing.assert_array_equal(returns_out, buf.discounted_returns(0.9, next_values))


def test_refused_out_arrays_are_left_untouched():
    buf = _random_buffer(np.random.default_rng(6))
    values = np.zeros(buf.data()["rewards"].shape, np.float32)
    advantages = np.full_like(values, 7.0)
    with pytest.raises(ValueError, match="out\\[1\\]"):
        buf.gae(values, values, out=(advantages, values))
    assert (advantages == 7.0).all()
