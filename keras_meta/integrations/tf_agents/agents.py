"""MAML-RL and RL² as TF-Agents agents over keras_meta's learners.

`MAMLAgent` and `RL2Agent` are `tf_agents.agents.TFAgent`s that a TF-Agents user trains
with the usual loop (a driver collecting into a `TFUniformReplayBuffer`, then
`agent.train(experience)`). Each holds a keras_meta learner (`keras_meta.rl.MAMLRL`,
`keras_meta.rl.RL2`) and runs the learner's own processing and updates on the
experience, converted from `Trajectory` batches into the learner's `RolloutBuffer`: the
algorithm exists once, in the learner.

Experience layout. `experience` is a `Trajectory` batch `[B, T]` as a replay buffer's
`gather_all()` returns it: row `b` is one sub-environment of a batched environment, and
every row starts an episode at time 0 (collect after `env.reset()`). TF-Agents' auto-reset
is gymnasium's NEXT_STEP mode: the transition after an episode end (a boundary) is not
trained on. An episode truncated by the environment bootstraps from the observation of
the next time step (the boundary's), so a row holds its episodes plus one time step,
which `DynamicEpisodeDriver(num_episodes=B * episodes)` collects when no episode ends
early and `DynamicStepDriver(num_steps=B * steps + 1)` always (see each agent). Steps of a
row past the episodes the algorithm uses are ignored, as the learners' own samplers stop
recording there.

Training in a graph. `train` runs the learners' host code (the C++ rollout buffer, GAE,
TRPO's line search). Called eagerly (TF-Agents' default in TF2) it runs as is; called
inside a `tf.function` (`common.function(agent.train)`, `tf_agents.train.Learner`) the
same code runs through one `tf.py_function`, so the graph holds a host call there and
cannot be placed on an accelerator as a whole.
"""

import numpy as np
import tensorflow as tf
from tf_agents.agents import tf_agent

from keras_meta._validation import check_learning_rate, check_positive_int, check_seed
from keras_meta.integrations.tf_agents.drivers import trajectories_to_rollouts
from keras_meta.integrations.tf_agents.env import specs_for
from keras_meta.integrations.tf_agents.policies import KerasPolicy, RL2KerasPolicy, TaskBatchedPolicy
from keras_meta.rl.maml_rl import MAMLRL, Batch
from keras_meta.rl.rl2 import RL2, episode_returns_in_trial


class _LearnerAgent(tf_agent.TFAgent):
    """What both agents share: the learner, its state as checkpoint state, spec checks, `train`.

    The agent's `train_step_counter` is the learner's iteration counter
    (`learner.training_state.iteration`): it counts updates of the meta-weights, and the
    learner derives its minibatch orders and sampling seeds from it. Everything a resumed
    run needs is tracked (`tf_agents.utils.common.Checkpointer(agent=agent)`): the policy
    weights, the optimizer, the counter and the collect policy's sampling stream.
    """

    _learner_type = None

    def __init__(self, learner, time_step_spec, action_spec, policy_fn, collect_policy_fn, name, debug_summaries,
                 summarize_grads_and_vars):
        if not isinstance(learner, self._learner_type):
            raise TypeError(f"Expected `learner` to be a keras_meta.rl.{self._learner_type.__name__}. Received: "
                            f"learner of type {type(learner).__name__}")
        if learner.rescale_actions:
            raise ValueError("Expected a learner whose policy acts in the env's units (rescale_actions=False); "
                             "TF-Agents environments receive the policy's actions unchanged. Received: learner "
                             "with rescale_actions=True")
        if (time_step_spec is None) != (action_spec is None):
            raise ValueError("Expected `time_step_spec` and `action_spec` both given or both None. Received: "
                             f"time_step_spec={time_step_spec!r}, action_spec={action_spec!r}")
        if time_step_spec is None:
            time_step_spec, action_spec = specs_for(learner.env)
        self._check_specs(learner, time_step_spec, action_spec)
        tf.Module.__init__(self, name=name)
        self._learner = learner
        # Tracked attribute: the policy weights, optimizer and counter go into checkpoints.
        self._training_state = learner.training_state
        super().__init__(time_step_spec, action_spec, policy_fn(time_step_spec, action_spec),
                         collect_policy_fn(time_step_spec, action_spec), train_sequence_length=None,
                         debug_summaries=debug_summaries, summarize_grads_and_vars=summarize_grads_and_vars,
                         train_step_counter=learner.training_state.iteration.value)

    @staticmethod
    def _check_specs(learner, time_step_spec, action_spec):
        obs_shape = tuple(time_step_spec.observation.shape)
        policy = learner.policy
        discrete = action_spec.dtype.is_integer
        action_size = (int(action_spec.maximum) - int(action_spec.minimum) + 1) if discrete else int(
            np.prod(action_spec.shape))
        expected = policy.num_actions if policy.discrete else policy.action_dim
        if (int(np.prod(obs_shape)) != int(np.prod(learner.observation_shape)) or discrete != policy.discrete
                or action_size != expected):
            raise ValueError(
                "Expected `time_step_spec` and `action_spec` to match the learner's policy (observation shape "
                f"{tuple(learner.observation_shape)}, {'discrete' if policy.discrete else 'continuous'} actions of "
                f"size {expected}). Received: observation shape {obs_shape}, action_spec={action_spec}")

    @property
    def learner(self):
        """The keras_meta learner the agent trains."""
        return self._learner

    def _initialize(self):
        return tf.no_op()

    def _train(self, experience, weights):
        if weights is not None:
            raise ValueError(f"Expected `weights` to be None: every step counts as collected. Received: {weights!r}")
        if tf.executing_eagerly():
            return self._train_eagerly(experience)
        like = self._loss_info_like()

        def run(*values):
            info = self._train_eagerly(tf.nest.pack_sequence_as(experience, list(values)))
            return [tf.cast(v, s.dtype) for v, s in zip(tf.nest.flatten(info), tf.nest.flatten(like))]

        flat = tf.py_function(run, tf.nest.flatten(experience), Tout=[s.dtype for s in tf.nest.flatten(like)])
        for value, spec in zip(flat, tf.nest.flatten(like)):
            value.set_shape(spec.shape)
        return tf.nest.pack_sequence_as(like, flat)

    def _loss_info(self, loss, **extra):
        return tf_agent.LossInfo(tf.constant(loss, tf.float32),
                                 {k: tf.constant(v, tf.float32) for k, v in extra.items()})

    def _loss_info_like(self):
        return tf_agent.LossInfo(tf.TensorSpec([], tf.float32),
                                 {k: tf.TensorSpec([], tf.float32) for k in self._extra_keys})

    def _train_eagerly(self, experience):
        raise NotImplementedError


class MAMLAgent(_LearnerAgent):
    """MAML-RL (policy-gradient inner step, TRPO or PPO outer step) as a TF-Agents agent.

    One meta-iteration is `learner.inner_steps + 1` collect/train rounds on the same
    `num_tasks` tasks (row `b` of the batched env runs task `b // rows_per_task`, see
    `set_tasks`):

    1. Collect with `agent.collect_policy` (the meta-weights at first) and call
       `agent.train(experience)`: an inner step. The agent processes the experience
       with `MAMLRL.process` (baseline, GAE, per-task normalisation), keeps it, and sets
       the collect policy's per-task weights to `MAMLRL`'s adaptation of the meta-weights
       on every batch kept so far. Repeated `learner.inner_steps` times.
    2. Collect again with the (now adapted) collect policy and call `agent.train`: the
       outer step, `MAMLRL.outer_update` (TRPO or PPO through the inner steps on the
       kept batches), after which the counter advances and the collect policy is back at
       the new meta-weights.

    The calls run `MAMLRL.train_step`'s own parts in its order, and the collect policy
    draws actions from `MAMLRL.collect`'s sampler with the seeds `train_step` uses at the
    same iteration, so on the same tasks a meta-iteration here and one of
    `learner.train_step(tasks, episodes_per_task=rows_per_task)` give the same weights
    when the environments step alike.

    Collection per round: one episode per row, e.g.
    `DynamicEpisodeDriver(env, agent.collect_policy, observers=[replay.add_batch],
    num_episodes=env.batch_size)` (navigation episodes end early only at the goal) or
    `DynamicStepDriver(..., num_steps=env.batch_size * horizon + 1)`; then
    `agent.train(replay.gather_all())` and `replay.clear()`.

    `tf_agents.train.Learner` can drive `train` (through the py_function, see the module
    docstring) only one call per collection: `learner.run(iterations=1, iterator=...)`
    after each driver run. Each call's experience must have been collected with the
    policy the previous call left, so a dataset sampled ahead of time (the Learner's
    usual `experience_dataset_fn` over a replay buffer filled once) would train the
    outer step on pre-update data: a Learner running several iterations per run does
    not fit MAML's two-phase data flow.

    State: the training state, the round within the meta-iteration (`phase`), the
    batches kept for the outer step, the collect policy's weights and sampling stream
    are all tracked, so a checkpoint taken between any two `train` calls resumes exactly.

    Args:
        learner: A `keras_meta.rl.MAMLRL` (`rescale_actions=False`).
        num_tasks: Tasks per meta-iteration.
        rows_per_task: Episodes per task and round (rows of the batched env per task).
        time_step_spec, action_spec: The environment's specs (default: those of
            `learner.env` through the TF-Agents bridge).
        debug_summaries, summarize_grads_and_vars: As for every TFAgent (no summaries
            are written).
        name: Module name.

    Raises:
        TypeError: If `learner` is not a `MAMLRL`.
        ValueError: For non-positive sizes, a learner with `rescale_actions=True` or
            specs that do not match the learner's policy.

    Example:

    ```python
    learner = km.rl.MAMLRL(km.rl.GaussianPolicy(body, 2), km.rl.Navigation2D(horizon=20))
    agent = MAMLAgent(learner, num_tasks=8, rows_per_task=5)
    env = task_batched_env(km.rl.Navigation2D(horizon=20), 8, 5)
    replay = TFUniformReplayBuffer(agent.collect_data_spec, env.batch_size, 100)
    driver = DynamicEpisodeDriver(env, agent.collect_policy, [replay.add_batch], env.batch_size)
    for it in range(iterations):
        set_tasks(env, learner.iteration_tasks(it, 8), 5)
        for _ in range(learner.inner_steps + 1):
            driver.run(env.reset())
            agent.train(replay.gather_all())
            replay.clear()
    ```
    """

    _learner_type = MAMLRL
    _extra_keys = ("phase", "episode_return", "kl")

    def __init__(self, learner, num_tasks, rows_per_task, time_step_spec=None, action_spec=None,
                 debug_summaries=False, summarize_grads_and_vars=False, name="MAMLAgent"):
        num_tasks = check_positive_int(num_tasks, "num_tasks")
        rows_per_task = check_positive_int(rows_per_task, "rows_per_task")
        super().__init__(
            learner, time_step_spec, action_spec,
            lambda t, a: KerasPolicy(learner.policy, t, a, deterministic=True),
            lambda t, a: TaskBatchedPolicy(learner, t, a, num_tasks, rows_per_task),
            name, debug_summaries, summarize_grads_and_vars)
        self._phase = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase")
        # The pre-update batches the outer step differentiates through, shapeless so they
        # hold any batch and travel with checkpoints.
        # dtypes as `MAMLRL.process` makes them, so the learner's functions see the same signature.
        dtypes = Batch(tf.float32, tf.int64 if learner.policy.discrete else tf.float32, tf.float32, tf.float32,
                       tf.int32)
        self._kept = [[tf.Variable(tf.zeros([0], dtype), shape=tf.TensorShape(None), trainable=False,
                                   name=f"kept_{k}_{field}") for field, dtype in zip(Batch._fields, dtypes)]
                      for k in range(learner.inner_steps)]
        self._inner_loss_fn = tf.function(learner.inner_loss)
        self._collect_policy.reset(self._round_seed())

    @property
    def phase(self):
        """The round within the meta-iteration the next `train` call runs (0 .. inner_steps)."""
        return int(self._phase.numpy())

    def _round_seed(self):
        return self._learner.collection_seed(int(self.train_step_counter.numpy()), self.phase)

    def _rollouts(self, experience, num_tasks):
        return trajectories_to_rollouts(experience, num_tasks, self._learner.horizon, self._learner.policy)

    def _batch(self, experience, num_tasks):
        buffer = self._rollouts(experience, num_tasks)
        return self._learner.process(buffer), float(buffer.episode_returns().mean())

    def _check_rows(self, experience, policy):
        rows = int(np.shape(experience.step_type)[0])
        if rows != policy.num_tasks * policy.rows_per_task:
            raise ValueError(f"Expected `experience` with num_tasks * rows_per_task = "
                             f"{policy.num_tasks * policy.rows_per_task} rows, one per row of the batched env. "
                             f"Received: {rows} rows")

    def _train_eagerly(self, experience):
        policy, learner = self._collect_policy, self._learner
        self._check_rows(experience, policy)
        batch, episode_return = self._batch(experience, policy.num_tasks)
        phase = self.phase
        theta = learner.policy.weights_list()
        if phase < learner.inner_steps:
            for variable, value in zip(self._kept[phase], batch):
                variable.assign(value)
            batches = self._kept_batches(phase + 1)
            # The REINFORCE loss of the step, the mean over tasks at the weights that sampled it.
            loss = float(self._inner_loss_fn(policy.fast_weights(), batch)) / policy.num_tasks
            policy.set_fast_weights(learner.adapt_tasks(theta, batches))
            self._phase.assign(phase + 1)
            policy.restart_stream(self._round_seed())
            return self._loss_info(loss, phase=phase, episode_return=episode_return, kl=0.0)
        logs = learner.outer_update(theta, self._kept_batches(phase), batch, policy.fast_weights())
        self.train_step_counter.assign_add(1)
        self._phase.assign(0)
        policy.reset(self._round_seed())
        loss = logs.get("surrogate_after", logs.get("loss"))
        return self._loss_info(loss, phase=phase, episode_return=episode_return, kl=logs["kl"])

    def _kept_batches(self, n):
        return [Batch(*(v.read_value() for v in kept)) for kept in self._kept[:n]]

    def adaptive_policy(self, num_tasks=None, rows_per_task=None, deterministic=False, seed=0):
        """A fresh task-batched policy at the meta-weights, for adaptation outside training.

        Collect with it on held-out tasks, `adapt` it on what it collected, and collect
        again to measure the adapted policy; the agent's training state is untouched.

        Args:
            num_tasks, rows_per_task: Its batch layout (default: the collect policy's).
            deterministic: Take the mean / greedy action (adaptation data is usually sampled).
            seed: Start of its sampling stream.

        Returns:
            A `TaskBatchedPolicy`.
        """
        policy = self._collect_policy
        num_tasks = policy.num_tasks if num_tasks is None else check_positive_int(num_tasks, "num_tasks")
        rows_per_task = policy.rows_per_task if rows_per_task is None else check_positive_int(
            rows_per_task, "rows_per_task")
        return TaskBatchedPolicy(self._learner, self.time_step_spec, self.action_spec, num_tasks, rows_per_task,
                                 deterministic=deterministic, seed=check_seed(seed))

    def adapt(self, policy, experience, step_size=None):
        """One inner policy-gradient step of `policy`'s per-task weights on `experience`.

        `MAMLRL`'s evaluation step (`meta_evaluate`, `adapt`): from the weights `policy`
        holds, on the episodes it collected, with `step_size` (default `inner_lr`).

        Args:
            policy: A `TaskBatchedPolicy` (from `adaptive_policy`); updated in place.
            experience: A `Trajectory` batch collected with `policy` (see the class docstring).
            step_size: The inner step size.

        Returns:
            The mean undiscounted episode return of `experience`.
        """
        if not isinstance(policy, TaskBatchedPolicy):
            raise TypeError("Expected `policy` to be a TaskBatchedPolicy (agent.adaptive_policy()). Received: "
                            f"policy of type {type(policy).__name__}")
        step_size = self._learner.inner_lr if step_size is None else check_learning_rate(step_size, "step_size")
        self._check_rows(experience, policy)
        batch, episode_return = self._batch(experience, policy.num_tasks)
        policy.set_fast_weights(self._learner.step_tasks(policy.fast_weights(), batch, step_size))
        return episode_return

    def episode_return(self, experience):
        """Mean undiscounted return of the first episode of every row of `experience`."""
        return float(self._rollouts(experience, 1).episode_returns().mean())


class RL2Agent(_LearnerAgent):
    """RL² (PPO over trials) as a TF-Agents agent.

    Every row of the batched environment runs one trial of `learner.episodes_per_trial`
    episodes of its task with `agent.collect_policy` (an `RL2KerasPolicy`: recurrent
    state kept across the trial's episode ends). `agent.train(experience)` converts the
    trials into the learner's `RolloutBuffer`, and runs `RL2.process` (trial-level GAE
    over the recurrent values) and `RL2.update` (PPO epochs over minibatches of whole
    trials), then advances the counter: one `RL2.train_step` minus its sampling.

    Collection: start each trial with `env.reset()` and the zero state, e.g.
    `DynamicEpisodeDriver(env, agent.collect_policy, [replay.add_batch],
    num_episodes=env.batch_size * episodes_per_trial).run(env.reset(),
    agent.collect_policy.get_initial_state(env.batch_size))` when no episode ends early,
    or `DynamicStepDriver` with `num_steps=env.batch_size * max_trial_steps + 1`;
    then `agent.train(replay.gather_all())`.

    `tf_agents.train.Learner` drives `train` like any on-policy agent: one
    `learner.run(iterations=1, iterator=iter(dataset))` per collection, the dataset
    yielding the whole replay buffer as one batch (through the py_function, see the
    module docstring).

    Args:
        learner: A `keras_meta.rl.RL2` (`rescale_actions=False`).
        time_step_spec, action_spec: The environment's specs (default: those of
            `learner.env`).
        seed: Start of the collect policy's sampling stream.
        debug_summaries, summarize_grads_and_vars: As for every TFAgent.
        name: Module name.

    Raises:
        TypeError: If `learner` is not an `RL2`.
        ValueError: For a learner with `rescale_actions=True` or specs that do not match
            its policy.

    Example:

    ```python
    learner = km.rl.RL2(None, km.rl.Navigation2D(horizon=10), episodes_per_trial=2, units=32)
    agent = RL2Agent(learner)
    env = task_batched_env(km.rl.Navigation2D(horizon=10), 16)
    ...  # as MAMLAgent, one collect + train per iteration
    ```
    """

    _learner_type = RL2
    _extra_keys = ("return", "first_episode_return", "last_episode_return", "kl")

    def __init__(self, learner, time_step_spec=None, action_spec=None, seed=0, debug_summaries=False,
                 summarize_grads_and_vars=False, name="RL2Agent"):
        seed = check_seed(seed)
        super().__init__(
            learner, time_step_spec, action_spec,
            lambda t, a: RL2KerasPolicy(learner.policy, t, a, deterministic=True),
            lambda t, a: RL2KerasPolicy(learner.policy, t, a, seed=seed),
            name, debug_summaries, summarize_grads_and_vars)

    def rollouts(self, experience):
        """The trials of `experience` as the learner's `RolloutBuffer` (one task a row)."""
        learner = self._learner
        rows = int(np.shape(experience.step_type)[0])
        return trajectories_to_rollouts(experience, rows, learner.max_trial_steps, learner.policy,
                                        episodes_per_row=learner.episodes_per_trial,
                                        episodes_per_trial=learner.episodes_per_trial)

    def episode_returns(self, experience):
        """Mean undiscounted return of each episode of a trial over the rows of `experience`."""
        return episode_returns_in_trial(self.rollouts(experience))

    def _train_eagerly(self, experience):
        learner = self._learner
        buffer = self.rollouts(experience)
        per_episode = episode_returns_in_trial(buffer)
        logs = learner.update(learner.process(buffer), int(self.train_step_counter.numpy()))
        self.train_step_counter.assign_add(1)
        return self._loss_info(logs["loss"], kl=logs["kl"], **{
            "return": per_episode.sum(), "first_episode_return": per_episode[0],
            "last_episode_return": per_episode[-1]})
