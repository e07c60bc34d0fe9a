"""keras_meta learners as Meta-World's `MetaLearningAgent`, run by Meta-World's own
`metaworld.evaluation.metalearning_evaluation`.

The cheap tests run the real protocol function on a stand-in vector env: 2D navigation
posing as a Meta-World env (the attributes and info the protocol reads, Meta-World's own
`RNNBasedMetaRLWrapper` for RL²'s reward inputs, gymnasium's `RecordEpisodeStatistics`).
The slow ones run Meta-World's ML1 reach and ML10 environments.
"""

import gymnasium
import keras
import numpy as np
import pytest

from keras_meta.rl import (MAMLRL, RL2, AdaptationSession, GaussianPolicy, MetaGradientPG, MetaWorldAgent,
                           MetaWorldML1, MetaWorldML10, Navigation2D, SNAILPolicy, metaworld_available,
                           metaworld_eval_envs)

AVAILABLE, REASON = metaworld_available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"Meta-World unavailable: {REASON}")

if AVAILABLE:
    from metaworld.evaluation import metalearning_evaluation
    from metaworld.wrappers import RNNBasedMetaRLWrapper

HORIZON, ENVS = 5, 3


class _NavigationAsMetaWorld(gymnasium.Wrapper):
    """What `metalearning_evaluation` asks of a Meta-World env, over 2D navigation."""

    task_name = "SawyerReachEnvV3"  # a Meta-World class name, as the protocol maps names

    def __init__(self, index):
        super().__init__(Navigation2D(horizon=HORIZON))
        self.terminate_on_success = False
        self._rng = np.random.default_rng(index)
        self.sample_tasks()

    def toggle_terminate_on_success(self, on):
        self.terminate_on_success = on

    def toggle_sample_tasks_on_reset(self, on):
        pass  # tasks change only through sample_tasks, as the protocol sets

    def sample_tasks(self):
        self.env.set_task({"goal": self._rng.uniform(-0.3, 0.3, 2).astype(np.float32)})
        return self.env.reset()

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["success"] = float(reward > -0.05)
        return obs, reward, terminated or (self.terminate_on_success and bool(info["success"])), truncated, info


def _envs(recurrent=False):
    def make(i):
        env = _NavigationAsMetaWorld(i)
        if recurrent:
            env = RNNBasedMetaRLWrapper(env, normalize_reward=False)
        return gymnasium.wrappers.RecordEpisodeStatistics(env)
    return gymnasium.vector.SyncVectorEnv([lambda i=i: make(i) for i in range(ENVS)],
                                          autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)


def _maml(env):
    keras.utils.set_random_seed(0)
    body = keras.Sequential([keras.Input((env.observation_space.shape[0],)), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(env.action_space.shape[0])])
    return MAMLRL(GaussianPolicy(body, env.action_space.shape[0]), env, seed=0)


def test_maml_rl_adapts_per_task_in_metaworlds_protocol():
    learner = _maml(Navigation2D(horizon=HORIZON))
    calls = []
    adapt_step = learner.adapt_step

    def spy(policy, buffer):
        data = buffer.data()
        calls.append((policy, data["lengths"].tolist(), data["rewards"].sum()))
        return adapt_step(policy, buffer)

    learner.adapt_step = spy
    agent = MetaWorldAgent(learner, seed=1)
    success, mean_return, per_task = metalearning_evaluation(agent, _envs(), num_evals=2, adaptation_steps=2,
                                                             adaptation_episodes=2, evaluation_episodes=2)
    assert 0.0 <= success <= 1.0 and np.isfinite(mean_return) and set(per_task) == {"reach-v3"}
    # One inner step per sub-env, per adaptation step, per evaluation round, each on the
    # sub-env's 2 finished episodes of HORIZON steps with real (negative) rewards.
    assert len(calls) == 2 * 2 * ENVS
    assert all(lengths == [[HORIZON, HORIZON]] and total < 0 for _, lengths, total in calls)
    # The second step of a round starts from the first one's policy; a round from the meta-policy.
    firsts = [c[0] for c in calls[:ENVS]] + [c[0] for c in calls[2 * ENVS:3 * ENVS]]
    assert all(p is learner.policy for p in firsts)
    assert all(c[0] is not learner.policy for c in calls[ENVS:2 * ENVS])
    evaluated = agent.session.policies
    assert len({id(p) for p in evaluated}) == ENVS and learner.policy not in evaluated


def test_rl2_carries_its_memory_and_reads_rewards_from_the_observation():
    learner = RL2(None, Navigation2D(horizon=HORIZON), units=8, seed=0)
    inputs = []
    act = learner.act

    def spy(x, state, seed, deterministic=False):
        inputs.append(np.asarray(x))
        return act(x, state, seed, deterministic)

    learner.act = spy
    agent = MetaWorldAgent(learner, seed=1)
    success, mean_return, _ = metalearning_evaluation(agent, _envs(recurrent=True), num_evals=1,
                                                      adaptation_episodes=2, evaluation_episodes=2)
    assert 0.0 <= success <= 1.0 and np.isfinite(mean_return)
    reward_column = 2 + learner.policy.action_features
    adaptation, evaluation = inputs[:2 * HORIZON], inputs[2 * HORIZON:]
    # Rewards reach the policy in both phases: from `step` while adapting, from the
    # observation (Meta-World's recurrent info) while evaluated.
    assert all((x[:, reward_column] < 0).all() for x in adaptation[1:HORIZON])
    assert all((x[:, reward_column] < 0).all() for x in evaluation[1:HORIZON])
    # The memory is not reset between the adaptation and the evaluated episodes.
    assert np.abs(np.asarray(agent.session.state)).sum() > 0


def test_rl2_needs_the_reward_in_the_observation_to_be_evaluated():
    agent = MetaWorldAgent(RL2(None, Navigation2D(horizon=HORIZON), units=8, seed=0))
    with pytest.raises(ValueError, match=r"recurrent_info_in_obs=True.*Received: observations with 2 features"):
        metalearning_evaluation(agent, _envs(), num_evals=1, adaptation_episodes=1, evaluation_episodes=1)


def test_agent_refuses_other_learners():
    with pytest.raises(TypeError, match=r"MAMLRL or keras_meta.rl.RL2. Received: learner of type str"):
        MetaWorldAgent("maml")


class _Recording(AdaptationSession):
    """A session that logs what the agent forwards and acts with zeros."""

    def __init__(self, log, num_envs, next_seed):
        super().__init__(num_envs, next_seed)
        self.log = log
        log.append(("open", num_envs))

    def act(self, observations, greedy=False, evaluating=False):
        self.log.append(("act", evaluating, int(self.next_seed().numpy()[1])))
        return np.zeros((self.num_envs, 2), np.float32)

    def record(self, observations, actions, rewards, terminated, truncated):
        self.log.append(("record", np.shape(observations), np.shape(rewards)))

    def adapt(self):
        self.log.append(("adapt",))

    def episodes_ended(self, mask):
        self.log.append(("ended", bool(np.all(mask))))


class _AnyLearner:
    """Not a keras_meta learner: only the hook the agent asks for, and the action mapping."""

    def __init__(self):
        self.log = []

    def adaptation_session(self, num_envs, next_seed):
        return _Recording(self.log, num_envs, next_seed)

    def env_actions(self, actions):
        return actions


def test_agent_only_forwards_the_protocol_to_the_learners_session():
    learner = _AnyLearner()
    metalearning_evaluation(MetaWorldAgent(learner, seed=1), _envs(), num_evals=2, adaptation_steps=1,
                            adaptation_episodes=1, evaluation_episodes=1)
    log = learner.log
    # A session per round of tasks, each for every sub-environment.
    assert [e for e in log if e[0] == "open"] == [("open", ENVS)] * 2
    first = log[:log.index(("open", ENVS), 1)]
    kinds = [e[0] for e in first]
    # HORIZON adaptation steps (act + record), the adaptation, then the evaluated episode.
    assert kinds[1:1 + 2 * HORIZON] == ["act", "record"] * HORIZON
    assert kinds[1 + 2 * HORIZON] == "adapt" and "record" not in kinds[2 + 2 * HORIZON:]
    assert [e[1] for e in first if e[0] == "act"] == [False] * HORIZON + [True] * HORIZON
    assert ("record", (ENVS, 2), (ENVS,)) in first and ("ended", True) in first
    # The sampling seeds run on across sessions: every action draws a fresh one.
    draws = [e[2] for e in log if e[0] == "act"]
    assert draws == list(range(1, len(draws) + 1))


def test_snail_policy_adapts_in_its_memory_through_rl2s_session():
    env = Navigation2D(horizon=HORIZON)
    policy = SNAILPolicy.for_env(env, max_steps=4 * HORIZON, blocks=(("tc", 4), ("attention", 4, 4)))
    learner = RL2(policy, env, seed=0)
    agent = MetaWorldAgent(learner, seed=1)
    success, mean_return, _ = metalearning_evaluation(agent, _envs(recurrent=True), num_evals=1,
                                                      adaptation_episodes=2, evaluation_episodes=2)
    assert 0.0 <= success <= 1.0 and np.isfinite(mean_return)
    # The step count of the window runs on from the adaptation episodes into the evaluated ones.
    assert (np.asarray(agent.session.state)[:, -1] > 2 * HORIZON).all()


def test_meta_gradient_pg_acts_with_its_policy_unadapted():
    keras.utils.set_random_seed(0)
    body = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    learner = MetaGradientPG(GaussianPolicy(body, 2), Navigation2D(horizon=HORIZON), seed=0)
    before = [w.numpy() for w in learner.policy.weights_list()]
    agent = MetaWorldAgent(learner, seed=1)
    success, mean_return, _ = metalearning_evaluation(agent, _envs(), num_evals=1, adaptation_episodes=2,
                                                      evaluation_episodes=1)
    assert 0.0 <= success <= 1.0 and np.isfinite(mean_return)
    assert all(p is learner.policy for p in agent.session.policies)
    for w, b in zip(learner.policy.weights_list(), before):
        np.testing.assert_array_equal(w, b)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["maml", "rl2"])
def test_ml1_reach_through_metaworlds_own_evaluation(kind):
    envs = metaworld_eval_envs("reach-v3", meta_batch_size=2, horizon=20, seed=0, recurrent=kind == "rl2")
    task_env = MetaWorldML1("reach-v3", horizon=20)
    learner = _maml(task_env) if kind == "maml" else RL2(None, task_env, units=8, seed=0)
    success, mean_return, per_task = metalearning_evaluation(MetaWorldAgent(learner), envs, num_evals=1,
                                                             adaptation_episodes=1, evaluation_episodes=1)
    assert 0.0 <= success <= 1.0 and np.isfinite(mean_return) and set(per_task) == {"reach-v3"}


@pytest.mark.slow
def test_ml10_splits_and_skills():
    env = MetaWorldML10(split="test", horizon=10)
    assert len(env.env_names) == 5
    tasks = env.sample_tasks(250, seed=0)
    names = set()
    for task in tasks[:: 25]:
        env.set_task(task)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (39,)
        names.add(type(env._env).__name__)
        for _ in range(10):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert truncated and "success" in info
    assert len(names) == 5
