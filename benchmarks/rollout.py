"""Rollout storage throughput: keras_meta's C++ buffer against TF-Agents and the NumPy twin.

Transitions/s for one meta-batch of rollouts (T tasks x E envs x H steps, MAML-RL navigation
sizes by default):
  - C++ buffer: H calls of RolloutBuffer.add on [T, E] batches, then GAE (target >= 10x TF-Agents);
  - TF-Agents: H calls of TFUniformReplayBuffer.add_batch (compiled with tf.function) on the same data;
  - GAE alone: C++ against the vectorised NumPy twin (target >= 50x).

    python benchmarks/rollout.py [--tasks 20 --envs 20 --horizon 100 --repeats 15]

GAE is timed with each kernel of csrc/discount.h the CPU has (the default, the fastest, first:
AVX2 in float32, then the scalar one in double precision); `--kernels scalar,avx2` chooses which.
"""

import argparse
import functools
import time

from keras_meta.integrations import tf_agents as _bridge  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)

import numpy as np
import tensorflow as tf
from tf_agents.replay_buffers import tf_uniform_replay_buffer

from keras_meta import _core
from keras_meta._twin import rollout as twin


def median_time(fn, repeats, number=1):
    """Median over `repeats` of the mean time of `number` back-to-back calls (timeit-style)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return float(np.median(times))


def warm_time(fn, number):
    """Mean time of `number` back-to-back calls after one untimed call."""
    fn()
    return median_time(fn, 1, number)


def variant_name(kernel, out):
    return f"{kernel} kernel" + (", out=" if out is not None else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--envs", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--obs-dim", type=int, default=2)
    parser.add_argument("--action-dim", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--kernels", default=",".join(_core._backward_kernels()),
                        help="GAE kernels to time, of " + ", ".join(_core._backward_kernels()))
    args = parser.parse_args()
    T, E, H, O, A = args.tasks, args.envs, args.horizon, args.obs_dim, args.action_dim
    n = T * E * H
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(H, T, E, O)).astype(np.float32)
    nxt = rng.normal(size=(H, T, E, O)).astype(np.float32)
    act = rng.normal(size=(H, T, E, A)).astype(np.float32)
    rew = rng.normal(size=(H, T, E)).astype(np.float32)
    term = rng.random((H, T, E)) < 0.01
    trunc = np.zeros((H, T, E), bool)
    trunc[-1] = True
    values = rng.normal(size=(T, E, H)).astype(np.float32)
    next_values = rng.normal(size=(T, E, H)).astype(np.float32)

    buf = _core.RolloutBuffer(T, E, H, O, A)

    def cpp_add_gae():
        buf.clear()
        for h in range(H):
            buf.add(obs[h], act[h], rew[h], term[h], trunc[h], nxt[h])
        buf.gae(values, next_values, 0.99, 0.95, False)

    spec = {"observation": tf.TensorSpec([O], tf.float32), "action": tf.TensorSpec([A], tf.float32),
            "reward": tf.TensorSpec([], tf.float32), "discount": tf.TensorSpec([], tf.float32)}
    replay = tf_uniform_replay_buffer.TFUniformReplayBuffer(spec, batch_size=T * E, max_length=H)

    @tf.function
    def add_batch(item):
        replay.add_batch(item)
    items = [{"observation": tf.constant(obs[h].reshape(T * E, O)), "action": tf.constant(act[h].reshape(T * E, A)),
              "reward": tf.constant(rew[h].reshape(-1)), "discount": tf.constant((~term[h]).reshape(-1).astype(np.float32))}
             for h in range(H)]

    def tfa_add():
        replay.clear()
        for h in range(H):
            add_batch(items[h])

    cpp_add_gae()
    tfa_add()
    data = buf.data()

    t_cpp = median_time(cpp_add_gae, args.repeats)
    t_tfa = median_time(tfa_add, args.repeats)
    # GAE calls take well under a millisecond; averaging 20 back-to-back calls keeps timer noise
    # out. This machine's speed changes by up to 2x from one moment to the next (a shared host),
    # so each repeat times the twin and every kernel back to back and the speed-ups are medians
    # of the per-repeat ratios. Whichever kernel came right after the twin (whose temporaries
    # take several MB) ran about 20% slower than the same kernel timed later, so each batch of
    # 20 follows one untimed call of the same variant, and the order rotates from one repeat to
    # the next so that no variant always follows the twin.
    # Each kernel is timed twice: returning new arrays, and writing into preallocated ones
    # (`out=`), which skips allocating two 160 KB arrays a call.
    kernels = args.kernels.split(",")
    out = (np.empty_like(values), np.empty_like(values))
    variants = [(kernel, target) for kernel in kernels for target in (None, out)]
    gae_times = {"twin": [], **{variant_name(*v): [] for v in variants}}
    timed = [("twin", None, functools.partial(twin.gae, data, values, next_values, 0.99, 0.95))] + [
        (variant_name(kernel, target), kernel, functools.partial(buf.gae, values, next_values, 0.99, 0.95, False, target))
        for kernel, target in variants]
    for repeat in range(args.repeats):
        shift = repeat % len(timed)
        for name, kernel, fn in timed[shift:] + timed[:shift]:
            if kernel is not None:
                _core._set_backward_kernel(kernel)
            gae_times[name].append(warm_time(fn, 20))
    print(f"T={T} E={E} H={H} obs_dim={O} action_dim={A}: {n} transitions per rollout, "
          f"median of {args.repeats} repeats")
    print(f"C++ RolloutBuffer add + GAE          {n / t_cpp:14,.0f} transitions/s  ({t_cpp * 1e3:8.2f} ms)")
    print(f"TF-Agents TFUniformReplayBuffer add  {n / t_tfa:14,.0f} transitions/s  ({t_tfa * 1e3:8.2f} ms)")
    print(f"  speed-up C++ (add+GAE) / TF-Agents (add only): {t_tfa / t_cpp:6.1f}x  (target 10x)")
    t_gae_np = float(np.median(gae_times["twin"]))
    print(f"GAE NumPy twin                       {n / t_gae_np:14,.0f} transitions/s  ({t_gae_np * 1e3:8.3f} ms)")
    for variant in list(gae_times)[1:]:
        t = float(np.median(gae_times[variant]))
        ratio = float(np.median(np.divide(gae_times["twin"], gae_times[variant])))
        print(f"GAE C++, {variant:<28}{n / t:14,.0f} transitions/s  ({t * 1e3:8.3f} ms)"
              f"  {ratio:6.1f}x the twin (target 50x)")

if __name__ == "__main__":
    main()
