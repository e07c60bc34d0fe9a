"""Python threads calling `_core` concurrently (the GIL is released in the heavy loops) lose
and duplicate nothing: every result equals the serial one.

tests/tasks/test_sampler.py already checks concurrent `EpisodeSampler.sample` on one sampler;
this adds concurrent `episode_indices`, regression generators, and the rollout buffer.

The RolloutBuffer object is not safe for concurrent *writers*: `add` and `clear` mutate its
storage without a lock (documented here and in fuzz/README.md); concurrent `gae`,
`discounted_returns` and `data` on one buffer only read it, and separate buffers are
independent.
"""

import concurrent.futures

import numpy as np

from keras_meta import _core

F32 = np.float32


def _buffer(seed, T=3, E=4, H=16):
    rng = np.random.default_rng(seed)
    buffer = _core.RolloutBuffer(T, E, H, 2, 1, False, 2)
    for _ in range(H):
        buffer.add(rng.normal(size=(T, E, 2)).astype(F32), rng.normal(size=(T, E, 1)).astype(F32),
                   rng.normal(size=(T, E)).astype(F32), rng.random((T, E)) < 0.1, rng.random((T, E)) < 0.1,
                   rng.normal(size=(T, E, 2)).astype(F32))
    values = rng.normal(size=(T, E, H)).astype(F32)
    return buffer, values


def _returns(buffer, values, trial_level):
    advantages, returns = buffer.gae(values, values, 0.99, 0.95, trial_level)
    return [advantages, returns, buffer.discounted_returns(0.9, values, trial_level)]


def _assert_same(serial, parallel):
    assert len(serial) == len(parallel)
    for want, got in zip(serial, parallel):
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)


def test_concurrent_returns_on_separate_buffers_match_serial():
    buffers = [_buffer(seed) for seed in range(8)]
    jobs = [(b, v, trial) for b, v in buffers for trial in (False, True)]
    serial = [_returns(*job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda job: _returns(*job), jobs * 1))
    _assert_same(serial, parallel)


def test_concurrent_reads_of_one_buffer_match_serial():
    buffer, values = _buffer(0)
    serial = _returns(buffer, values, True) + [np.array(v) for v in buffer.data().values()]

    def read(_):
        return _returns(buffer, values, True) + [np.array(v) for v in buffer.data().values()]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(read, range(32)))
    _assert_same([serial] * 32, parallel)


def test_concurrent_episode_indices_and_generators_match_serial():
    images = np.arange(40 * 3 * 3, dtype=np.uint8).reshape(40, 3, 3, 1)
    labels = np.repeat(np.arange(8, dtype=np.int64), 5)
    sampler = _core.EpisodeSampler(images, labels, np.arange(8, dtype=np.int64), 4, 2, 2, rotations=True,
                                   num_threads=2)
    calls = [lambda s=s: sampler.episode_indices(16, s) for s in range(8)]
    calls += [lambda s=s: sampler.sample(4, s, num_threads=3) for s in range(8)]
    calls += [lambda s=s, f=f: f(64, 20, s) for s in range(4)
              for f in (_core.sinusoid, _core.linear, _core.polynomial, _core.step_function)]
    calls += [lambda s=s: (_core.philox_uniform(s, 3, 1, 5000),) for s in range(4)]
    serial = [call() for call in calls]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda call: call(), calls * 2))
    _assert_same(serial * 2, parallel)


def test_concurrent_navigation_on_separate_envs_match_serial():
    def run(seed):
        rng = np.random.default_rng(seed)
        nav = _core.BatchedNavigation(16, horizon=20)
        nav.set_goals(rng.uniform(-0.5, 0.5, (16, 2)).astype(F32))
        nav.reset()
        return [np.concatenate([x.reshape(16, -1).astype(F32) for x in
                                nav.step(rng.uniform(-0.2, 0.2, (16, 2)).astype(F32))], axis=1)
                for _ in range(40)]

    serial = [run(s) for s in range(8)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, range(8)))
    _assert_same(serial, parallel)
