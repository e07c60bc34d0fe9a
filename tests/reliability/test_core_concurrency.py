"""Python threads calling `_core` concurrently (the GIL is released in the heavy loops) lose
and duplicate nothing: every result equals the serial one, and every object keeps its
invariants when several threads share it.

tests/tasks/test_sampler.py already checks concurrent `EpisodeSampler.sample` on one sampler;
this adds concurrent `episode_indices`, regression generators, the rollout buffer and the
batched navigation environment (each serialises its own mutations), and interpreter exit
while daemon threads are inside `_core` calls.

The checks that could corrupt memory on a broken build run in a fresh interpreter, which
loads this process's `_core` (the sanitized one under fuzz/sanitize.sh) without TensorFlow.
"""

import concurrent.futures
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

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


_PRELUDE = """
import importlib.machinery, importlib.util, sys, threading, time
import numpy as np

def load_core():
    loader = importlib.machinery.ExtensionFileLoader("keras_meta._core", sys.argv[1])
    spec = importlib.util.spec_from_file_location("keras_meta._core", sys.argv[1], loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
"""


def _run_isolated(code, timeout=120):
    return subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code), _core.__file__],
                          capture_output=True, text=True, timeout=timeout)


def _assert_clean(proc):
    assert "terminate called" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]


# Each loops over every GIL-releasing method of one object, from four daemon threads that
# are still inside those calls when the main thread exits.
_HAMMERS = {
    "sampler": """
        images = np.zeros((400, 28, 28, 1), np.uint8)
        labels = np.repeat(np.arange(20, dtype=np.int64), 20)
        sampler = _core.EpisodeSampler(images, labels, np.arange(20, dtype=np.int64), 5, 5, 5, num_threads=3)
        def hammer():
            while True:
                sampler.sample(8, 0)
                sampler.episode_indices(2000, 1)
    """,
    "regression": """
        def hammer():
            while True:
                for family in (_core.sinusoid, _core.linear, _core.polynomial, _core.step_function):
                    family(32, 2000, 0)
    """,
    "philox": """
        def hammer():
            while True:
                _core.philox_uniform(0, 0, 0, 200000)
    """,
    "navigation": """
        nav = _core.BatchedNavigation(50000)
        actions, goals = np.zeros((50000, 2), np.float32), np.ones((50000, 2), np.float32)
        def hammer():
            while True:
                nav.step(actions)
                nav.set_goals(goals)
                nav.goals()
                nav.reset()
    """,
    "rollout": """
        buffer = _core.RolloutBuffer(4, 64, 64, 64, 2, False, 1)
        values = np.zeros((4, 64, 64), np.float32)
        obs, act = np.zeros((4, 64, 64), np.float32), np.zeros((4, 64, 2), np.float32)
        rows = np.zeros((4, 64), np.float32)
        def hammer():
            while True:
                try:
                    buffer.add(obs, act, rows, rows > 0, rows > 0, obs)
                except ValueError:  # full
                    buffer.clear()
                buffer.gae(values, values)
                buffer.discounted_returns(0.9, values)
                len(buffer)
    """,
}


@pytest.mark.parametrize("target", sorted(_HAMMERS))
def test_exit_with_daemon_threads_inside_core_calls_is_clean(target):
    # Before the exit hook of csrc/gil.cc, such a thread asked for the GIL back after
    # finalization had begun and the process aborted: "terminate called without an active
    # exception", code 134.
    start = """
        for _ in range(4):
            threading.Thread(target=hammer, daemon=True).start()
        time.sleep(0.3)
    """
    proc = _run_isolated("_core = load_core()\n" + textwrap.dedent(_HAMMERS[target]) + textwrap.dedent(start))
    _assert_clean(proc)


def test_core_calls_from_late_exit_handlers_still_return():
    # atexit runs handlers registered before `_core` was loaded after `_core`'s own hook: the
    # finalizing thread must still get its results back.
    proc = _run_isolated(
        """
        import atexit
        atexit.register(lambda: print("late", _core.philox_uniform(0, 0, 0, 3).shape, len(buffer)))
        _core = load_core()
        buffer = _core.RolloutBuffer(1, 1, 2, 1)
        """
    )
    _assert_clean(proc)
    assert "late (3,) 0" in proc.stdout


def test_a_child_forked_while_threads_are_inside_core_calls_works_and_exits():
    # The child has only the forking thread: the calls counted in the parent must not make its
    # exit hook wait for threads that do not exist there.
    proc = _run_isolated(
        """
        import os
        _core = load_core()

        def hammer():
            while True:
                _core.philox_uniform(0, 0, 0, 200000)

        for _ in range(3):
            threading.Thread(target=hammer, daemon=True).start()
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:
            _core.philox_uniform(1, 0, 0, 10)
            sys.exit(7)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 7, status
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            raise AssertionError("the forked child did not exit")
        """
    )
    _assert_clean(proc)


def test_concurrent_adds_never_overfill_a_row_and_stay_whole():
    # `add` used to check for a full row with the GIL held and append after releasing it, so
    # two threads could both take a row's last free step and write past its end.
    proc = _run_isolated(
        """
        _core = load_core()
        T, E, H, O, THREADS, TRIES = 2, 64, 8, 256, 8, 12
        rows = np.zeros((T, E), np.float32)

        def race():
            buffer = _core.RolloutBuffer(T, E, H, O, 1, False, 1)
            accepted, start = [], threading.Barrier(THREADS)

            def writer(w):
                start.wait()
                for n in range(TRIES):
                    code = np.float32(w * 100 + n)
                    obs = np.full((T, E, O), code, np.float32)
                    try:
                        buffer.add(obs, np.full((T, E, 1), code, np.float32), rows + code, rows > 0, rows > 0, obs)
                        accepted.append(code)
                    except ValueError as error:
                        assert "which is full" in str(error), error

            threads = [threading.Thread(target=writer, args=(w,)) for w in range(THREADS)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            d = buffer.data()
            assert (d["lengths"] == H).all(), d["lengths"]
            assert len(accepted) == H and len(buffer) == T * E * H, (len(accepted), len(buffer))
            # Every step of every row holds one whole `add`, the same one across rows.
            for key in ("observations", "next_observations", "actions"):
                steps = d[key][..., 0].reshape(T * E, H)
                assert (steps == steps[:1]).all(), key
            assert sorted(d["rewards"][0, 0]) == sorted(accepted)
            assert (d["observations"] == d["observations"][..., :1]).all()

        for _ in range(10):
            race()
        """
    )
    _assert_clean(proc)


def test_returns_see_whole_adds_and_clears():
    # Returns computed while other threads add and clear read one consistent state: every
    # row of this buffer has the same length at any moment, so every row's returns agree.
    proc = _run_isolated(
        """
        _core = load_core()
        T, E, H, GAMMA = 2, 256, 16, 0.5
        buffer = _core.RolloutBuffer(T, E, H, 4, 1, False, 1)
        ones = np.ones((T, E), np.float32)
        obs, act, zeros = np.zeros((T, E, 4), np.float32), np.zeros((T, E, 1), np.float32), np.zeros((T, E, H), np.float32)
        expected = [np.array([sum(GAMMA ** k for k in range(n - t)) for t in range(H)], np.float32) for n in range(H + 1)]
        stop, failures = threading.Event(), []

        def writer():
            while not stop.is_set():
                try:
                    buffer.add(obs, act, ones, ones < 0, ones < 0, obs)
                except ValueError:
                    buffer.clear()

        def reader():
            for _ in range(300):
                returns = buffer.discounted_returns(GAMMA, zeros).reshape(T * E, H)
                advantages = buffer.gae(zeros, zeros, GAMMA, 1.0)[0].reshape(T * E, H)
                size = len(buffer)
                for result in (returns, advantages):
                    if not (result == result[:1]).all() or not any((result[0] == e).all() for e in expected):
                        failures.append(result[:, 0].copy())
                if size % (T * E):
                    failures.append(size)

        writers = [threading.Thread(target=writer) for _ in range(3)]
        readers = [threading.Thread(target=reader) for _ in range(3)]
        [t.start() for t in writers + readers]
        [t.join() for t in readers]
        stop.set()
        [t.join() for t in writers]
        assert not failures, failures[:3]
        """
    )
    _assert_clean(proc)


@pytest.mark.parametrize("round_", range(3))
def test_threads_stepping_one_navigation_env_lose_no_steps(round_):
    n, threads, steps = 50000, 4, 100
    nav = _core.BatchedNavigation(n, horizon=10**6, max_action=2.0)
    goals = np.full((n, 2), 1e6 + round_, F32)
    nav.set_goals(goals)
    nav.reset()
    start = threading.Barrier(threads + 1)

    def stepper():
        start.wait()
        for _ in range(steps):
            nav.step(np.ones((n, 2), F32))

    def retargeter():
        start.wait()
        for _ in range(steps):
            nav.set_goals(goals)
            np.testing.assert_array_equal(nav.goals(), goals)

    with concurrent.futures.ThreadPoolExecutor(threads + 1) as pool:
        for future in [pool.submit(stepper) for _ in range(threads)] + [pool.submit(retargeter)]:
            future.result()
    obs, rewards, terminated, truncated = nav.step(np.zeros((n, 2), F32))
    np.testing.assert_array_equal(obs, np.full((n, 2), threads * steps, F32))
    assert not terminated.any() and not truncated.any()
