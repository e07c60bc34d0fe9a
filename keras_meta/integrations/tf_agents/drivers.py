"""Drivers: episode and step collection, RL² trials, `Trajectory` batches as rollout buffers, and
MAML-RL adaptation on driver data."""

import numpy as np
import tensorflow as tf
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from keras_meta._validation import check_positive_int, check_seed, check_steps
from keras_meta.integrations.tf_agents.policies import KerasPolicy
from keras_meta.rl.buffer import RolloutBuffer


def _replay_buffer(policy, env, capacity):
    return tf_uniform_replay_buffer.TFUniformReplayBuffer(
        data_spec=policy.trajectory_spec, batch_size=env.batch_size, max_length=capacity)


def collect_episodes(env, policy, num_episodes, capacity=100_000):
    """Collects `num_episodes` episodes with a `DynamicEpisodeDriver` into a `TFUniformReplayBuffer`.

    Args:
        env: A `TFPyEnvironment`.
        policy: A TF-Agents policy (e.g. `KerasPolicy`).
        num_episodes: Episodes to collect.
        capacity: Replay buffer length per batch entry.

    Returns:
        The replay buffer.
    """
    num_episodes = check_positive_int(num_episodes, "num_episodes")
    capacity = check_positive_int(capacity, "capacity")
    buffer = _replay_buffer(policy, env, capacity)
    dynamic_episode_driver.DynamicEpisodeDriver(env, policy, observers=[buffer.add_batch],
                                                num_episodes=num_episodes).run()
    return buffer


def collect_steps(env, policy, num_steps, capacity=100_000):
    """Collects `num_steps` steps with a `DynamicStepDriver` into a `TFUniformReplayBuffer`."""
    num_steps, capacity = check_positive_int(num_steps, "num_steps"), check_positive_int(capacity, "capacity")
    buffer = _replay_buffer(policy, env, capacity)
    dynamic_step_driver.DynamicStepDriver(env, policy, observers=[buffer.add_batch], num_steps=num_steps).run()
    return buffer


def trajectories_to_rollouts(experience, num_tasks, horizon, policy, episodes_per_row=1, episodes_per_trial=1):
    """A `keras_meta.rl.RolloutBuffer` holding the episodes of a `Trajectory` batch.

    Row `b` of `experience` becomes env row `b % (B / num_tasks)` of task
    `b // (B / num_tasks)`. Time column `t` is recorded as the transition from
    `observation[t]` with `action[t]`, `reward[t]`, terminated where it ends an episode
    with discount 0, truncated where it ends one with a nonzero discount, and next
    observation `observation[t + 1]`; boundary columns (after an episode end) are
    skipped, as is everything after a row's `episodes_per_row` episodes or `horizon`
    recorded steps. The last column only provides the next observation.

    Args:
        experience: A `Trajectory` with outer dims `[B, T]`, `T >= 2`, every row starting
            an episode (`step_type` FIRST at time 0).
        num_tasks: Number of tasks `B` is divided into.
        horizon: Steps recorded per row.
        policy: The learner's Keras policy (its action layout).
        episodes_per_row: Episodes recorded per row.
        episodes_per_trial: Episodes per trial (RL²).

    Returns:
        A filled `RolloutBuffer` with `num_tasks` tasks of `B / num_tasks` rows.

    Raises:
        ValueError: For a batch that is not `num_tasks` groups of rows, fewer than two
            time steps, or a row that does not start an episode.
    """
    step_type = np.asarray(experience.step_type)
    if step_type.ndim != 2 or step_type.shape[1] < 2:
        raise ValueError("Expected `experience` with outer dims [batch, time] and at least 2 time steps. "
                         f"Received: experience.step_type.shape={step_type.shape}")
    rows, steps = step_type.shape
    if rows % num_tasks:
        raise ValueError(f"Expected `experience` to hold num_tasks={num_tasks} groups of equally many rows. "
                         f"Received: {rows} rows")
    if np.any(step_type[:, 0] != ts.StepType.FIRST):
        raise ValueError("Expected every row of `experience` to start an episode (step_type FIRST at time 0; "
                         f"collect right after env.reset()). Received: step_type[:, 0]={step_type[:, 0].tolist()}")
    obs = np.asarray(experience.observation, np.float32).reshape(rows, steps, -1)
    actions = np.asarray(experience.action)
    ends = np.asarray(experience.next_step_type) == ts.StepType.LAST
    discount = np.asarray(experience.discount)
    rewards = np.asarray(experience.reward, np.float32)
    action_shape = () if policy.discrete else (policy.action_dim,)
    buffer = RolloutBuffer(num_tasks, rows // num_tasks, horizon, obs.shape[2:], action_shape or (1,),
                           discrete=policy.discrete, episodes_per_trial=episodes_per_trial,
                           autoreset_mode="NextStep", max_episodes_per_env=episodes_per_row)
    for t in range(steps - 1):
        if buffer.finished:
            break
        buffer.add(obs[:, t], actions[:, t].reshape((rows,) + action_shape), rewards[:, t],
                   ends[:, t] & (discount[:, t] == 0), ends[:, t] & (discount[:, t] != 0), obs[:, t + 1])
    return buffer


def driver_adapt(learner, env, task, episodes=20, steps=1, seed=0):
    """MAML-RL adaptation whose inner-loop data is collected by TF-Agents drivers.

    Each inner step collects `episodes` episodes with a `KerasPolicy` at the current fast
    weights through a `DynamicEpisodeDriver` and a `TFUniformReplayBuffer` observer,
    converts them into a `keras_meta.rl.RolloutBuffer` (`trajectories_to_rollouts`), and
    takes one `learner.adapt_step` on it.

    Args:
        learner: A `keras_meta.rl.MAMLRL`.
        env: A `TFPyEnvironment` over a `GymnasiumPyEnvironment`.
        task: The task to adapt to.
        episodes: Episodes per inner step.
        steps: Inner steps.
        seed: Sampling seed.

    Returns:
        The adapted policy (a Keras model).

    Raises:
        ValueError: If the learner rescales actions (`rescale_actions=True`): the TF-Agents
            environment receives the policy's actions as they are.
    """
    episodes, seed = check_positive_int(episodes, "episodes"), check_seed(seed)
    steps = check_steps(steps, "steps", allow_zero=True)
    if getattr(learner, "rescale_actions", False):
        raise ValueError("Expected a learner whose policy acts in the env's units (rescale_actions=False); "
                         "TF-Agents drivers pass the policy's actions to the env unchanged. "
                         "Received: learner with rescale_actions=True")
    env.pyenv.envs[0].set_task(task)
    current = learner.policy
    for k in range(steps):
        # The driver resets the env first, so the stream starts an episode, as the conversion needs.
        experience = collect_episodes(env, KerasPolicy(current, env.time_step_spec(), env.action_spec(),
                                                       seed=seed * 1000 + k), episodes).gather_all()
        # One row holding the episodes one after another; the last time step only
        # provides the final episode's next observation.
        rollout = trajectories_to_rollouts(experience, 1, int(experience.step_type.shape[1]) - 1, learner.policy,
                                           episodes_per_row=episodes)
        current = learner.adapt_step(current, rollout)
    return current


class TrialDriver:
    """A driver that runs RL² trials: policy state kept across episode ends, reset between trials.

    TF-Agents' stock drivers either reset a policy's state at every episode start
    (through `automatic_state_reset`) or never. This driver steps a batch-1
    `TFPyEnvironment` in Python, like `PyDriver`: for each trial it (optionally) sets
    the trial's task, resets the env, starts from `policy.get_initial_state(1)`, and
    feeds the state returned by `policy.action` back in until `episodes_per_trial`
    episodes have ended. Observers receive `Trajectory` batches as with the stock
    drivers (including the boundary transition from a `LAST` to the next `FIRST`).

    Args:
        env: A `TFPyEnvironment` over a `GymnasiumPyEnvironment`, batch size 1.
        policy: A TF-Agents policy (typically `RL2KerasPolicy`).
        episodes_per_trial: Episodes per trial (at least 1).
        num_trials: Trials per `run()`.
        observers: Callables receiving each `Trajectory`.
        tasks: Optional list of tasks; trial `i` runs `tasks[i % len(tasks)]`.

    Raises:
        ValueError: For a trial shorter than one episode or a batched env.

    Example:

    ```python
    env = tf_env(BernoulliBandit(2))
    policy = RL2KerasPolicy(learner.policy, env.time_step_spec(), env.action_spec())
    log = TrialDriver(env, policy, episodes_per_trial=10, num_trials=5,
                      tasks=BernoulliBandit(2).sample_tasks(5, seed=0)).run()
    ```
    """

    def __init__(self, env, policy, episodes_per_trial, num_trials=1, observers=(), tasks=None):
        if isinstance(episodes_per_trial, bool) or not isinstance(episodes_per_trial, (int, np.integer)) \
                or episodes_per_trial < 1:
            raise ValueError(
                "Expected a trial of at least one episode: `episodes_per_trial` a positive integer. "
                f"Received: episodes_per_trial={episodes_per_trial!r}")
        num_trials = check_positive_int(num_trials, "num_trials")
        if tasks is not None:
            tasks = list(tasks)
            if not tasks:
                raise ValueError(
                    f"Expected `tasks` to be None or a non-empty list of tasks. Received: tasks={tasks!r}")
        if env.batch_size not in (None, 1):
            raise ValueError(f"Expected a TFPyEnvironment of batch size 1. Received: batch_size={env.batch_size}")
        self.env, self.policy = env, policy
        self.episodes_per_trial, self.num_trials = int(episodes_per_trial), int(num_trials)
        self.observers = list(observers)
        self.tasks = tasks

    def _set_task(self, task):
        py_env = self.env.pyenv.envs[0]
        py_env.set_task(task)

    def run(self):
        """Runs `num_trials` trials.

        Returns:
            A dict of NumPy arrays with one entry per policy call: `trial`, `episode`
            (within the trial), `step_type`, `reward` (of the time step), `action`, and
            `state` (the flattened policy state the action was computed from).
        """
        log = {k: [] for k in ("trial", "episode", "step_type", "reward", "action", "state")}
        for trial in range(self.num_trials):
            if self.tasks:
                self._set_task(self.tasks[trial % len(self.tasks)])
            time_step = self.env.reset()
            state = self.policy.get_initial_state(self.env.batch_size or 1)
            episodes = 0
            while episodes < self.episodes_per_trial:
                action_step = self.policy.action(time_step, state)
                next_time_step = self.env.step(action_step.action)
                traj = trajectory.from_transition(time_step, action_step, next_time_step)
                for observer in self.observers:
                    observer(traj)
                flat = tf.nest.flatten(state)
                log["trial"].append(trial)
                log["episode"].append(episodes)
                log["step_type"].append(int(time_step.step_type.numpy().reshape(-1)[0]))
                log["reward"].append(float(time_step.reward.numpy().reshape(-1)[0]))
                log["action"].append(np.asarray(action_step.action.numpy()[0]))
                log["state"].append(np.concatenate([np.reshape(s.numpy()[0], [-1]) for s in flat]) if flat
                                    else np.zeros(0, np.float32))
                if bool(next_time_step.is_last().numpy().reshape(-1)[0]):
                    episodes += 1
                time_step, state = next_time_step, action_step.state
        return {k: np.asarray(v) for k, v in log.items()}
