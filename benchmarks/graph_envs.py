"""Env steps/s of the in-graph 2D navigation against host vector envs and TF-Agents drivers.

One rollout = T tasks x E envs x H steps of 2D navigation (MAML-RL's meta-batch sizes by
default), the same pre-drawn actions for every variant except the drivers (random policies):
  - in-graph, XLA: `GraphNavigation2D` stepped in a `tf.scan` inside `tf.function(jit_compile=True)`;
  - in-graph, tf.function: the same without XLA;
  - gymnasium `SyncVectorEnv` of T*E host `Navigation2D`s (the baseline, ratio 1);
  - keras_meta's C++ `BatchedNavigation2D` (the host path MAML-RL uses);
  - TF-Agents `PyDriver` over a `BatchedPyEnvironment` of T*E `GymnasiumPyEnvironment`s
    (keras_meta's bridge over `Navigation2D`), `RandomPyPolicy`;
  - TF-Agents `DynamicStepDriver` over `GraphTFEnvironment` (compiled by TF-Agents), `RandomTFPolicy`.
Each round times every variant once, in turn; the table shows medians over rounds.

    python benchmarks/graph_envs.py [--tasks 20 --envs 20 --horizon 100 --rounds 5]
"""

import argparse
import time

from keras_meta.integrations import tf_agents as kmtfa  # sets TF_USE_LEGACY_KERAS first

import gymnasium
import numpy as np
import tensorflow as tf
from tf_agents.drivers import dynamic_step_driver, py_driver
from tf_agents.environments import batched_py_environment
from tf_agents.policies import random_py_policy, random_tf_policy

from keras_meta.rl import BatchedNavigation2D, GraphNavigation2D, Navigation2D


def in_graph(env, tasks, actions, envs, jit):
    @tf.function(jit_compile=jit)
    def rollout(tasks, actions):
        state, obs = env.reset(tasks, envs, seed=0)
        zero = tf.zeros(tf.shape(obs)[:2])
        out = tf.scan(lambda carry, a: env.step(carry[0], a)[:3], actions, initializer=(state, obs, zero))
        return tf.reduce_sum(out[2])  # the rewards, so nothing is pruned

    tasks, actions = tf.constant(tasks), tf.constant(actions)
    return lambda: rollout(tasks, actions).numpy()


def sync_vector(host_tasks, actions):
    def make(task):
        env = Navigation2D(horizon=actions.shape[0])
        env.set_task(task)
        return env
    venv = gymnasium.vector.SyncVectorEnv([lambda t=t: make(t) for t in host_tasks],
                                          autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP)
    flat = actions.reshape(actions.shape[0], -1, 2)

    def run():
        venv.reset(seed=0)
        for a in flat:
            venv.step(a)
    return run


def native(host_tasks, actions):
    venv = BatchedNavigation2D(len(host_tasks), horizon=actions.shape[0])
    venv.set_tasks(host_tasks)
    flat = actions.reshape(actions.shape[0], -1, 2)

    def run():
        venv.reset()
        for a in flat:
            venv.step(a)
    return run


def tf_agents_py_driver(host_tasks, horizon):
    def make(task):
        env = Navigation2D(horizon=horizon)
        env.set_task(task)
        return kmtfa.GymnasiumPyEnvironment(env)
    env = batched_py_environment.BatchedPyEnvironment([make(t) for t in host_tasks], multithreading=False)
    policy = random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), outer_dims=(env.batch_size,))
    driver = py_driver.PyDriver(env, policy, observers=[], max_steps=env.batch_size * horizon)

    def run():
        driver.run(env.reset())
    return run


def tf_agents_graph_driver(env, tasks, envs, horizon):
    tf_env = kmtfa.GraphTFEnvironment(env, tasks, envs)
    policy = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(), tf_env.action_spec())
    driver = dynamic_step_driver.DynamicStepDriver(tf_env, policy, num_steps=tf_env.batch_size * horizon)
    run = tf.function(driver.run, autograph=False)

    def call():
        run(tf_env.reset())
    return call


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--envs", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    T, E, H = args.tasks, args.envs, args.horizon
    env = GraphNavigation2D(horizon=H)
    host_tasks = Navigation2D().sample_tasks(T, seed=0)
    tasks = env.encode_tasks(host_tasks)
    per_env = [host_tasks[i // E] for i in range(T * E)]
    actions = np.random.default_rng(0).uniform(-0.1, 0.1, (H, T, E, 2)).astype(np.float32)
    variants = {
        "in-graph, XLA": in_graph(env, tasks, actions, E, jit=True),
        "in-graph, tf.function": in_graph(env, tasks, actions, E, jit=False),
        "gymnasium SyncVectorEnv (baseline)": sync_vector(per_env, actions),
        "C++ BatchedNavigation2D": native(per_env, actions),
        "TF-Agents PyDriver, bridge env": tf_agents_py_driver(per_env, H),
        "TF-Agents DynamicStepDriver, GraphTFEnvironment": tf_agents_graph_driver(env, tasks, E, H),
    }
    for run in variants.values():
        run()  # traces and compiles outside the timing
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    steps = T * E * H
    base = steps / np.median(times["gymnasium SyncVectorEnv (baseline)"])
    print(f"{T} tasks x {E} envs x {H} steps = {steps} env steps per rollout; medians of {args.rounds} rounds")
    print("| variant | rollout time (s) | env steps/s | vs SyncVectorEnv |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        rate = steps / np.median(ts)
        print(f"| {name} | {np.median(ts):.4f} | {rate:,.0f} | {rate / base:.1f}x |")


if __name__ == "__main__":
    main()
