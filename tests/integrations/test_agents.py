"""MAMLAgent and RL2Agent: TF-Agents agents trained by TF-Agents' own loop over keras_meta's learners."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest

if importlib.util.find_spec("tf_agents") is None:  # importing it here would bypass the bridge's env setup
    pytest.skip("needs the tf-agents extra", allow_module_level=True)

from keras_meta.integrations import tf_agents as kmtfa  # noqa: E402
from keras_meta.integrations.tf_agents.graph_env import GraphTFEnvironment  # noqa: E402
from keras_meta.rl import MAMLRL, RL2, GaussianPolicy, GraphNavigation2D, Navigation2D  # noqa: E402

import tensorflow as tf  # noqa: E402
from tf_agents.drivers import dynamic_episode_driver  # noqa: E402
from tf_agents.policies import policy_saver  # noqa: E402
from tf_agents.replay_buffers import tf_uniform_replay_buffer  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402
from tf_agents.train import learner as tfa_learner  # noqa: E402
from tf_agents.utils import common  # noqa: E402

PY = sys.executable
H, T, E = 10, 4, 4  # horizon, tasks per meta-batch, rows (episodes or trials) per task
HELD_OUT = Navigation2D().sample_tasks(8, seed=20261204)


def _maml(outer="trpo", init_seed=0, **kwargs):
    keras.utils.set_random_seed(init_seed)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])
    return MAMLRL(GaussianPolicy(body, 2), Navigation2D(horizon=H), outer=outer, seed=3, **kwargs)


def _rl2(init_seed=0, units=16):
    keras.utils.set_random_seed(init_seed)
    return RL2(None, Navigation2D(horizon=H), episodes_per_trial=2, units=units, reward_scale=0.1, seed=5)


class Loop:
    """A stock TF-Agents collection setup: the in-graph navigation env, a TFUniformReplayBuffer, a
    DynamicEpisodeDriver."""

    def __init__(self, agent, num_tasks, rows_per_task, episodes_per_row=1):
        self.agent, self.num_tasks, self.rows = agent, num_tasks, rows_per_task
        graph_env = GraphNavigation2D(horizon=H)
        self.env = GraphTFEnvironment(graph_env, graph_env.sample_tasks(num_tasks, seed=0), rows_per_task)
        self.replay = tf_uniform_replay_buffer.TFUniformReplayBuffer(agent.collect_data_spec, self.env.batch_size,
                                                                     max_length=4 * H)
        self.episodes = self.env.batch_size * episodes_per_row

    def collect(self, policy, tasks):
        """Runs the driver for one episode (MAML) or trial (RL²) a row on `tasks`; returns the experience."""
        kmtfa.set_tasks(self.env, tasks, self.rows)
        self.replay.clear()
        dynamic_episode_driver.DynamicEpisodeDriver(self.env, policy, [self.replay.add_batch],
                                                    num_episodes=self.episodes).run(
            self.env.reset(), policy.get_initial_state(self.env.batch_size))
        return self.replay.gather_all()

    def tasks(self):
        return self.agent.learner.iteration_tasks(int(self.agent.train_step_counter.numpy()), self.num_tasks)

    def meta_iteration(self, train=None):
        """One MAML meta-iteration (inner_steps + 1 rounds of collect -> train), or one RL² iteration."""
        agent, tasks = self.agent, self.tasks()
        rounds = agent.learner.inner_steps + 1 if isinstance(agent, kmtfa.MAMLAgent) else 1
        return [(train or agent.train)(self.collect(agent.collect_policy, tasks)) for _ in range(rounds)]


def _state(learner):
    """Weights, counters and optimizer slots: everything training continues from."""
    optimizer = learner.training_state.optimizer
    return [v.numpy() for v in learner.training_state.weights + (optimizer.variables if optimizer else [])]


def _set_state(learner, values):
    optimizer = learner.training_state.optimizer
    for variable, value in zip(learner.training_state.weights + (optimizer.variables if optimizer else []), values,
                               strict=True):
        variable.assign(value)


def _assert_same_state(a, b):
    for x, y in zip(_state(a) if not isinstance(a, list) else a, _state(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _learner_train(learner):
    """`agent.train` through `tf_agents.train.Learner`, one run per collection."""
    def train(experience):
        return learner.run(iterations=1, iterator=iter(tf.data.Dataset.from_tensors((experience, ()))))
    return train


def maml_post_adaptation_return(agent, seed=11):
    """Mean return on the held-out goals after one inner step on 4 sampled episodes a goal."""
    loop = Loop(agent, len(HELD_OUT), 4)
    policy = agent.adaptive_policy(len(HELD_OUT), 4, seed=seed)
    agent.adapt(policy, loop.collect(policy, HELD_OUT))
    return agent.episode_return(loop.collect(policy, HELD_OUT))


def rl2_second_episode_return(agent, seed=11):
    """Mean return of the second episode of a trial on the held-out goals (4 trials a goal)."""
    loop = Loop(agent, len(HELD_OUT), 4, episodes_per_row=2)
    policy = kmtfa.RL2KerasPolicy(agent.learner.policy, agent.time_step_spec, agent.action_spec, seed=seed)
    return float(agent.episode_returns(loop.collect(policy, HELD_OUT))[-1])


@pytest.fixture(scope="module")
def maml_run():
    """A MAMLAgent (TRPO) after one meta-iteration of the stock loop, and the learner's own iteration."""
    learner = _maml()
    agent = kmtfa.MAMLAgent(learner, T, E)
    before = maml_post_adaptation_return(agent)
    start = _state(learner)
    loop = Loop(agent, T, E)
    infos = loop.meta_iteration()
    by_agent = _state(learner)
    _set_state(learner, start)
    logs = learner.train_step(learner.iteration_tasks(0, T), episodes_per_task=E)  # C++ navigation, own sampler
    return types.SimpleNamespace(agent=agent, loop=loop, before=before, infos=infos, by_agent=by_agent, logs=logs)


def test_maml_agent_iteration_is_the_learners_train_step(maml_run):
    # Driver data from the in-graph env through agent.train == MAMLRL.train_step, bit for bit.
    _assert_same_state(maml_run.by_agent, maml_run.agent.learner)
    pre, post = maml_run.infos
    assert float(pre.extra["episode_return"]) == pytest.approx(maml_run.logs["pre_return"], rel=1e-6)
    assert float(post.extra["episode_return"]) == pytest.approx(maml_run.logs["post_return"], rel=1e-6)
    assert float(post.loss) == pytest.approx(maml_run.logs["surrogate_after"], rel=1e-6)
    assert [int(i.extra["phase"]) for i in maml_run.infos] == [0, 1]
    assert int(maml_run.agent.train_step_counter.numpy()) == 1 and maml_run.agent.phase == 0


@pytest.mark.slow
def test_maml_agent_meta_trains_navigation_in_a_stock_loop(maml_run):
    agent = maml_run.agent
    for _ in range(14):
        maml_run.loop.meta_iteration()
    after = maml_post_adaptation_return(agent)
    assert int(agent.train_step_counter.numpy()) == 15
    # Same held-out goals, same sampling seeds: the meta-trained agent adapts to a better return.
    assert after > maml_run.before + 0.5, (maml_run.before, after)


def test_learner_drives_maml_agent_and_a_checkpoint_resumes_mid_iteration(tmp_path):
    # PPO outer step, 2 inner steps; the Learner runs agent.train inside its tf.function (py_function).
    learner = _maml("ppo", inner_steps=2)
    start = _state(learner)
    learner.train_step(learner.iteration_tasks(0, T), episodes_per_task=E)
    own = _state(learner)
    _set_state(learner, start)
    agent = kmtfa.MAMLAgent(learner, T, E)
    driver = tfa_learner.Learner(str(tmp_path / "learner"), agent.train_step_counter, agent, checkpoint_interval=0)
    loop = Loop(agent, T, E)
    infos = loop.meta_iteration(_learner_train(driver))
    _assert_same_state(own, learner)
    assert [float(i.extra["phase"]) for i in infos] == [0, 1, 2]

    # Train N rounds, save, restore in a fresh agent, train M rounds == train N + M straight.
    tasks = loop.tasks()
    agent.train(loop.collect(agent.collect_policy, tasks))  # iteration 1's first inner round
    common.Checkpointer(str(tmp_path / "ckpt"), agent=agent).save(agent.train_step_counter)
    for _ in range(2):  # its second inner round and its outer round
        agent.train(loop.collect(agent.collect_policy, tasks))
    resumed = kmtfa.MAMLAgent(_maml("ppo", init_seed=123, inner_steps=2), T, E)  # other initial weights
    common.Checkpointer(str(tmp_path / "ckpt"), agent=resumed).initialize_or_restore(
    ).assert_existing_objects_matched()
    assert resumed.phase == 1 and int(resumed.train_step_counter.numpy()) == 1
    loop = Loop(resumed, T, E)
    for _ in range(2):
        resumed.train(loop.collect(resumed.collect_policy, tasks))
    _assert_same_state(agent.learner, resumed.learner)


def test_learner_drives_rl2_agent_and_a_checkpoint_resumes(tmp_path):
    learner = _rl2()
    start = _state(learner)
    direct = kmtfa.RL2Agent(learner)
    loop = Loop(direct, 8, 1, episodes_per_row=2)
    infos = [loop.meta_iteration()[0] for _ in range(2)]
    assert np.isfinite([float(i.loss) for i in infos]).all()
    trained = _state(learner)
    _set_state(learner, start)
    agent = kmtfa.RL2Agent(learner)
    driver = tfa_learner.Learner(str(tmp_path / "learner"), agent.train_step_counter, agent, checkpoint_interval=0)
    loop = Loop(agent, 8, 1, episodes_per_row=2)
    for _ in range(2):
        loop.meta_iteration(_learner_train(driver))
    _assert_same_state(trained, learner)
    assert int(agent.train_step_counter.numpy()) == 2

    common.Checkpointer(str(tmp_path / "ckpt"), agent=agent).save(agent.train_step_counter)
    loop.meta_iteration()
    resumed = kmtfa.RL2Agent(_rl2(init_seed=99))
    common.Checkpointer(str(tmp_path / "ckpt"), agent=resumed).initialize_or_restore(
    ).assert_existing_objects_matched()
    Loop(resumed, 8, 1, episodes_per_row=2).meta_iteration()  # Adam's moments, counter and stream came back
    _assert_same_state(agent.learner, resumed.learner)


@pytest.mark.slow
def test_rl2_agent_meta_trains_navigation_in_a_stock_loop():
    agent = kmtfa.RL2Agent(_rl2(units=32))
    before = rl2_second_episode_return(agent)
    loop = Loop(agent, 32, 1, episodes_per_row=2)
    for _ in range(60):
        loop.meta_iteration()
    after = rl2_second_episode_return(agent)
    # Same held-out goals, same sampling seeds: a better return in the trial's second episode.
    assert after > before + 0.2, (before, after)


def test_rl2_agent_converts_trials_as_the_learner_collects_them():
    learner = _rl2()
    agent = kmtfa.RL2Agent(learner)
    tasks = Navigation2D().sample_tasks(3, seed=7)
    own = learner.process(learner.collect(tasks, 1, deterministic=True))
    greedy = kmtfa.RL2KerasPolicy(learner.policy, agent.time_step_spec, agent.action_spec, deterministic=True)
    driven = learner.process(agent.rollouts(Loop(agent, 3, 1, episodes_per_row=2).collect(greedy, tasks)))
    for name, a, b in zip(own._fields, own, driven):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_policy_saver_exports_agent_policies_for_plain_tensorflow(maml_run, tmp_path):
    maml = maml_run.agent
    rl2 = kmtfa.RL2Agent(_rl2())
    paths = {}
    for name, agent in (("maml", maml), ("rl2", rl2)):
        paths[name] = str(tmp_path / name)
        policy_saver.PolicySaver(agent.policy, batch_size=None).save(paths[name])
    rng = np.random.default_rng(0)
    obs = rng.uniform(-0.5, 0.5, (5, 3, 2)).astype(np.float32)  # 5 steps of a batch of 3
    step_types = [0, 1, 1, 2, 0]
    expected = {}
    for name, agent in (("maml", maml), ("rl2", rl2)):
        state, actions = agent.policy.get_initial_state(3), []
        for st, o in zip(step_types, obs):
            step = ts.TimeStep(tf.fill([3], st), tf.fill([3], -0.5), tf.ones([3]), tf.constant(o))
            out = agent.policy.action(step, state)
            state = out.state
            actions.append(out.action.numpy().tolist())
        expected[name] = actions
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        out = {{}}
        for name, path in {paths!r}.items():
            loaded = tf.saved_model.load(path)
            state = loaded.signatures["get_initial_state"](batch_size=tf.constant(3))
            actions = []
            for st, o in zip({step_types!r}, {obs.tolist()!r}):
                inputs = {{"0/step_type": tf.fill([3], st), "0/reward": tf.fill([3], -0.5),
                          "0/discount": tf.ones([3]), "0/observation": tf.constant(o, tf.float32)}}
                inputs.update({{"1/" + k: v for k, v in state.items()}})
                result = loaded.signatures["action"](**inputs)
                state = {{k[len("state/"):]: v for k, v in result.items() if k.startswith("state/")}}
                actions.append(result["action"].numpy().tolist())
            out[name] = actions
        out["modules"] = sorted(m for m in ("keras_meta", "tf_agents") if m in sys.modules)
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run([PY, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    for name in ("maml", "rl2"):
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(expected["rl2"][1], expected["rl2"][2])  # the carried state moves the actions
