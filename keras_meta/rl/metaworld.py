"""Meta-World v3 ML1 through the task interface, and the Meta-World meta-evaluation protocol.

`metaworld` is optional and imported lazily. metaworld 3.1.1 pins `mujoco==3.3.0`; with
another MuJoCo (e.g. 4.x, where `model.eq_data` grew) its environments fail to build, so
`MetaWorldML1` checks the pin up front and raises an ImportError that says what to install.

The protocol (`meta_evaluate_episodes`) works for any keras_meta RL learner, each of which
adapts in its own way (its `evaluate_episodes` method):

- `MAMLRL`: adapt with one policy-gradient step on `k` episodes of the task (none for
  `k = 0`), then run the evaluation episodes with the adapted policy;
- `RL2`: run one trial of `k + eval_episodes` episodes; the first `k` are the adaptation
  episodes and the rest are evaluated, the memory carried throughout.

Success is Meta-World's: an episode succeeds when `info["success"]` is true at any step.
Environments without a `success` entry count as never successful.
"""

import functools
import importlib
import importlib.metadata

import gymnasium
import numpy as np
from gymnasium import spaces

import tensorflow as tf

from keras_meta._validation import check_bool, check_positive_int, check_seed
from keras_meta.rl.envs import TaskEnv, check_task_env

_INSTALL_HINT = ("Install it with `pip install metaworld==3.1.1` (which pins mujoco==3.3.0; "
                 "use a separate environment if other packages need a newer MuJoCo).")


def _import_metaworld():
    try:
        metaworld = importlib.import_module("metaworld")
    except ImportError as error:
        raise ImportError(f"keras_meta.rl.MetaWorldML1 needs the `metaworld` package. {_INSTALL_HINT} "
                          f"Received: {error}") from error
    try:
        pins = [r for r in importlib.metadata.requires("metaworld") or [] if r.replace(" ", "").startswith("mujoco==")]
        import mujoco
    except (importlib.metadata.PackageNotFoundError, ImportError):
        return metaworld
    for pin in pins:
        wanted = pin.split("==", 1)[1].split(";")[0].strip()
        if mujoco.__version__ != wanted:
            raise ImportError(
                f"Expected mujoco=={wanted} for metaworld {importlib.metadata.version('metaworld')} (its pin; "
                f"other versions fail to build the Sawyer models). Received: mujoco=={mujoco.__version__}. "
                f"{_INSTALL_HINT}")
    return metaworld


@functools.lru_cache(maxsize=4)
def _benchmark(kind, *args, seed):
    """`metaworld.<kind>(*args, seed=seed)`, built once and shared.

    Building a benchmark resets every skill's environment for each of its tasks (ML10:
    25-47 s on this project's 2-core CPU), and every environment of a vector env is a
    `clone()` that would build it again. The environments only read its task lists and
    classes, and each makes its own skill environments, so sharing it is safe.
    """
    return getattr(_import_metaworld(), kind)(*args, seed=seed)


def metaworld_available():
    """`(True, "")` when Meta-World imports with its pinned MuJoCo, else `(False, reason)`."""
    try:
        _import_metaworld()
    except ImportError as error:
        return False, str(error)
    return True, ""


def _check_split(split):
    if split not in ("train", "test"):
        raise ValueError(f"Expected `split` to be 'train' or 'test'. Received: split={split!r}")


class _MetaWorldTaskEnv(gymnasium.Env, TaskEnv):
    """A Meta-World v3 benchmark's train or test tasks behind the task interface.

    A task is `{"split": "train" | "test", "index": i}`, the `i`-th of the benchmark's
    tasks of that split; `set_task` also accepts a raw `metaworld.Task`. Each environment
    class the tasks name is built once, on its first task, and `set_task` switches to it
    (Meta-World v3's classes share the 39-dim observation and the (4,) action space).
    """

    metadata = {"render_modes": []}

    def _build(self, benchmark, split, horizon):
        self._benchmark = benchmark
        self._tasks = {"train": list(benchmark.train_tasks), "test": list(benchmark.test_tasks)}
        self._classes = {**benchmark.test_classes, **benchmark.train_classes}
        self._instances = {}
        self._env = self._env_for(self._tasks[split][0])
        limit = int(getattr(self._env, "max_path_length", 500))
        if int(horizon) != horizon or not 1 <= horizon <= limit:
            raise ValueError(f"Expected `horizon` to be an integer in [1, {limit}]. Received: horizon={horizon!r}")
        self.split, self.horizon = split, int(horizon)
        inner = self._env.observation_space
        self.observation_space = spaces.Box(inner.low.astype(np.float32), inner.high.astype(np.float32),
                                            inner.shape, np.float32)
        self.action_space = spaces.Box(self._env.action_space.low.astype(np.float32),
                                       self._env.action_space.high.astype(np.float32),
                                       self._env.action_space.shape, np.float32)
        self._task = {"split": split, "index": 0}
        self._env.set_task(self._tasks[split][0])
        self._steps = 0

    def _env_for(self, task):
        if task.env_name not in self._instances:
            self._instances[task.env_name] = self._classes[task.env_name]()
        return self._instances[task.env_name]

    @property
    def env_names(self):
        """The environment names of this split's tasks, in the benchmark's order."""
        return list(dict.fromkeys(t.env_name for t in self._tasks[self.split]))

    def sample_tasks(self, n, seed):
        n = check_positive_int(n, "n")
        pool = len(self._tasks[self.split])
        rng = np.random.default_rng(seed)
        index = rng.choice(pool, n, replace=n > pool)
        return [{"split": self.split, "index": int(i)} for i in index]

    def set_task(self, task):
        if isinstance(task, dict):
            split, index = task.get("split", self.split), int(task["index"])
            if split not in self._tasks or not 0 <= index < len(self._tasks[split]):
                raise ValueError(f"Expected a task with split 'train'/'test' and index in [0, "
                                 f"{len(self._tasks.get(split, []))}). Received: task={task!r}")
            raw, self._task = self._tasks[split][index], {"split": split, "index": index}
        else:
            raw, self._task = task, {"split": "raw", "index": -1, "task": task}
        self._env = self._env_for(raw)
        self._env.set_task(raw)

    def get_task(self):
        return dict(self._task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=seed)
        self._steps = 0
        return np.asarray(obs, np.float32), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self._env.step(np.asarray(action, np.float32))
        self._steps += 1
        truncated = bool(truncated) or (not terminated and self._steps >= self.horizon)
        return np.asarray(obs, np.float32), float(reward), bool(terminated), truncated, info

    def close(self):
        for env in self._instances.values():
            env.close()


class MetaWorldML1(_MetaWorldTaskEnv):
    """One Meta-World v3 ML1 environment (e.g. "reach-v3") with the task interface.

    ML1 varies the goal (and object) positions of one manipulation skill: 50 train and 50
    test tasks. `sample_tasks(n, seed)` draws `n` of the `split`'s tasks (without
    replacement while `n <= 50`); a task is `{"split": ..., "index": i}`, and `set_task`
    also accepts the other split's tasks or a raw `metaworld.Task`. Observations are
    float32 (39-dim), actions Box(-1, 1, (4,)); episodes are truncated after `horizon`
    steps (Meta-World's 500 by default), and `info["success"]` is passed through.

    Args:
        env_name: The ML1 skill, e.g. "reach-v3", "push-v3", "pick-place-v3".
        split: "train" or "test" tasks for `sample_tasks`.
        horizon: Episode length (at most Meta-World's `max_path_length`, 500).
        seed: Seed of the benchmark's task construction.

    Raises:
        ImportError: If metaworld (with its pinned MuJoCo) is not importable.
        ValueError: For an unknown `split`, `env_name` or an out-of-range `horizon`.

    Example:

    ```python
    env = MetaWorldML1("reach-v3", horizon=150)
    env.set_task(env.sample_tasks(1, seed=0)[0])
    obs, info = env.reset(seed=0)
    ```
    """

    def __init__(self, env_name="reach-v3", split="train", horizon=500, seed=0):
        _check_split(split)  # before building the benchmark, which is slow
        if not isinstance(env_name, str):
            raise TypeError(f"Expected `env_name` to be an ML1 environment name such as 'reach-v3'. "
                            f"Received: env_name={env_name!r}")
        seed = check_seed(seed)
        self._config = dict(env_name=env_name, split=split, horizon=horizon, seed=seed)
        try:
            benchmark = _benchmark("ML1", env_name, seed=seed)
        except (KeyError, ValueError, AssertionError) as error:
            raise ValueError(f"Expected an ML1 environment name such as 'reach-v3'. Received: env_name={env_name!r} "
                             f"({error})") from error
        self.env_name = env_name
        self._build(benchmark, split, horizon)


class MetaWorldML10(_MetaWorldTaskEnv):
    """Meta-World v3 ML10: 10 skills to meta-train on, 5 held-out skills to test on.

    The train split holds 50 tasks (goal/object positions) of each of the 10 train
    skills, the test split 50 of each of the 5 test skills (`env_names` lists them); a
    task is `{"split": ..., "index": i}` as in `MetaWorldML1`, and `set_task` switches
    to the task's skill. Building the benchmark resets every skill's environment for
    each of its tasks, which takes minutes on a small CPU.

    Args:
        split: "train" or "test" tasks for `sample_tasks`.
        horizon: Episode length (at most 500).
        seed: Seed of the benchmark's task construction.

    Raises:
        ImportError: If metaworld (with its pinned MuJoCo) is not importable.
        ValueError: For an unknown `split` or an out-of-range `horizon`.
    """

    def __init__(self, split="train", horizon=500, seed=0):
        _check_split(split)  # before building the benchmark, which is slow
        seed = check_seed(seed)
        self._config = dict(split=split, horizon=horizon, seed=seed)
        self._build(_benchmark("ML10", seed=seed), split, horizon)


def meta_evaluate_episodes(learner, env, tasks, adaptation_episodes=(0, 1, 3), eval_episodes=3, seed=0,
                           deterministic=False):
    """Meta-World's meta-evaluation: success rate and return after `k` adaptation episodes.

    For every held-out task and every `k` in `adaptation_episodes`, the learner adapts on
    `k` episodes of the task, then `eval_episodes` episodes are measured. How it adapts is
    the learner's own `evaluate_episodes(env, task, k, eval_episodes, seed, deterministic)`
    (see the module docstring for MAML-RL and RL²).

    Args:
        learner: A keras_meta RL learner (`keras_meta.rl.MAMLRL`, `keras_meta.rl.RL2`), or
            any object with that `evaluate_episodes` method.
        env: The task environment (e.g. `MetaWorldML1(split="test")`).
        tasks: Held-out tasks from `env.sample_tasks`.
        adaptation_episodes: Numbers of adaptation episodes `k` (non-negative).
        eval_episodes: Evaluated episodes per task and `k`.
        seed: Sampling seed.
        deterministic: Evaluate greedy / mean actions (adaptation always samples).

    Returns:
        `{k: {"success_rate": ..., "return": ..., "success_per_task": [...],
        "return_per_task": [...]}}`, rates and returns averaged over tasks and episodes.

    Raises:
        TypeError: For a learner without `evaluate_episodes`.
        ValueError: For negative `k` or non-positive `eval_episodes`.
    """
    if not callable(getattr(learner, "evaluate_episodes", None)):
        raise TypeError("Expected `learner` to be a keras_meta RL learner (with an `evaluate_episodes` method, "
                        "e.g. keras_meta.rl.MAMLRL or keras_meta.rl.RL2). Received: learner of type "
                        f"{type(learner).__name__}")
    ks = [int(k) for k in adaptation_episodes]
    if any(k < 0 for k in ks):
        raise ValueError(f"Expected non-negative adaptation episode counts. Received: adaptation_episodes={ks}")
    if int(eval_episodes) != eval_episodes or eval_episodes < 1:
        raise ValueError(f"Expected `eval_episodes` to be a positive integer. Received: eval_episodes={eval_episodes!r}")
    check_task_env(env)
    results = {}
    for k in ks:
        returns, successes = [], []
        for i, task in enumerate(tasks):
            task_seed = int(seed) * 100_003 + i * 1_009 + k
            r, s = learner.evaluate_episodes(env, task, k, int(eval_episodes), task_seed, deterministic)
            returns.append(float(np.mean(r)))
            successes.append(float(np.mean(s)))
        results[k] = {"success_rate": float(np.mean(successes)), "return": float(np.mean(returns)),
                      "success_per_task": successes, "return_per_task": returns}
    return results


class MetaWorldAgent:
    """A keras_meta RL learner as Meta-World's `MetaLearningAgent`.

    Meta-World 3's own meta-evaluation, `metaworld.evaluation.metalearning_evaluation`,
    drives an agent through `init` (new tasks), `adapt_action` + `step` (adaptation
    episodes), `adapt` (after each round of them), then `reset` + `eval_action` (the
    evaluated episodes) on a vector env with one task per sub-environment. This adapter
    forwards each call to the learner's `AdaptationSession` for the current tasks
    (`learner.adaptation_session`, opened at the first action after `init`), so the
    learner decides how it adapts (see `keras_meta.rl.adaptation`):

    - `MAMLRL`: each sub-environment keeps its own policy, the meta-policy at `init`;
      `adapt` takes one policy-gradient step per sub-environment on the episodes it
      finished since the last `adapt` (`learner.adapt_step`), and `eval_action` acts
      with the adapted policies.
    - `RL2` (an `RL2Policy` or `SNAILPolicy`): `init` starts a trial (zero memory); every
      action feeds `[s_t, a_{t-1}, r_{t-1}, d_{t-1}]` and carries the memory on, through
      the adaptation and the evaluated episodes alike; `adapt` does nothing.
    - `MetaGradientPG`: its current policy, not adapted (it learns one task).

    Meta-World's `evaluation` loop passes the agent no rewards, so an `RL2` learner reads
    the previous reward from the observation: build the evaluation envs with
    `recurrent_info_in_obs=True, normalize_reward_in_recurrent_info=False` (see
    `metaworld_eval_envs`). Meta-World's `step` passes no final observation either, so an
    adaptation episode ending by truncation bootstraps from its last observation.

    Args:
        learner: A keras_meta RL learner with `adaptation_session` (`keras_meta.rl.MAMLRL`,
            `keras_meta.rl.RL2`, `keras_meta.rl.MetaGradientPG`), meta-trained on tasks
            with the evaluation envs' observation and action spaces.
        deterministic: Evaluate mean / greedy actions (adaptation always samples).
        seed: Seed of the sampled actions.

    Attributes:
        session: The `AdaptationSession` of the current tasks (None until the first
            action after `init`).

    Raises:
        TypeError: For a learner without `adaptation_session`.

    Example:

    ```python
    from metaworld.evaluation import metalearning_evaluation
    envs = metaworld_eval_envs("reach-v3", meta_batch_size=5, horizon=150)
    success_rate, mean_return, per_task = metalearning_evaluation(
        MetaWorldAgent(learner), envs, num_evals=2, adaptation_episodes=5, evaluation_episodes=3)
    ```
    """

    def __init__(self, learner, deterministic=False, seed=0):
        if not callable(getattr(learner, "adaptation_session", None)):
            raise TypeError("Expected `learner` to be a keras_meta RL learner with an `adaptation_session` method, "
                            "e.g. keras_meta.rl.MAMLRL or keras_meta.rl.RL2. Received: learner of type "
                            f"{type(learner).__name__}")
        self.learner = learner
        self.deterministic = check_bool(deterministic, "deterministic")
        self._seed = check_seed(seed) % (2**31)
        self._draws = 0  # carries on across sessions: every action draws a fresh seed
        self.session = None

    # --- the MetaLearningAgent protocol -------------------------------------------------------
    def init(self):
        """New tasks: the next action opens a new session (meta-policy, fresh trial)."""
        self.session = None  # opened for the vector env's size on the next action

    def adapt_action(self, observations):
        """Sampled actions for adaptation, and the policy's own actions as `aux_policy_outputs`."""
        raw = self._session_for(observations).act(observations)
        return self.learner.env_actions(raw), {"policy_action": raw}

    def step(self, timestep):
        """Records one adaptation step (a `metaworld.evaluation.Timestep`)."""
        self.session.record(timestep.observation, np.asarray(timestep.aux_policy_outputs["policy_action"]),
                            np.asarray(timestep.reward), np.asarray(timestep.terminated),
                            np.asarray(timestep.truncated))

    def adapt(self):
        """Adapts the session's learner to the adaptation episodes since the last `adapt`."""
        if self.session is not None:
            self.session.adapt()

    def eval_action(self, observations):
        """Actions of the adapted policies (or of the trial's memory) for evaluation."""
        raw = self._session_for(observations).act(observations, greedy=self.deterministic, evaluating=True)
        return self.learner.env_actions(raw)

    def reset(self, env_mask):
        """Marks the sub-environments whose evaluated episode just ended."""
        if self.session is not None:
            self.session.episodes_ended(env_mask)

    # --- internals ------------------------------------------------------------------------------
    def _session_for(self, observations):
        if self.session is None:
            self.session = self.learner.adaptation_session(len(observations), self._next_seed)
        return self.session

    def _next_seed(self):
        self._draws += 1
        return tf.constant([self._seed, self._draws], tf.int64)


def metaworld_eval_envs(benchmark="reach-v3", meta_batch_size=5, horizon=500, seed=0, recurrent=False):
    """Meta-World's own test-split vector env for `metalearning_evaluation`.

    Args:
        benchmark: An ML1 skill name (e.g. "reach-v3") or "ML10".
        meta_batch_size: Sub-environments (a multiple of the benchmark's test skills).
        horizon: Episode length (`max_episode_steps`).
        seed: Seed of the benchmark's tasks and the envs.
        recurrent: Add the previous action, reward (unnormalised) and done to the
            observations, as an `RL2` learner needs in Meta-World's evaluation loop.

    Returns:
        A gymnasium `SyncVectorEnv` (SAME_STEP autoreset), built by `metaworld.make_ml_envs_test`.

    Raises:
        ImportError: If metaworld (with its pinned MuJoCo) is not importable.
    """
    metaworld = _import_metaworld()
    check_positive_int(meta_batch_size, "meta_batch_size")
    check_positive_int(horizon, "horizon")
    return metaworld.make_ml_envs_test(benchmark, seed=check_seed(seed), meta_batch_size=meta_batch_size,
                                       max_episode_steps=horizon, recurrent_info_in_obs=bool(recurrent),
                                       normalize_reward_in_recurrent_info=False)
