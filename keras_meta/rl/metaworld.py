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

import importlib
import importlib.metadata

import gymnasium
import numpy as np
from gymnasium import spaces

from keras_meta._validation import check_positive_int
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


def metaworld_available():
    """`(True, "")` when Meta-World imports with its pinned MuJoCo, else `(False, reason)`."""
    try:
        _import_metaworld()
    except ImportError as error:
        return False, str(error)
    return True, ""


class MetaWorldML1(gymnasium.Env, TaskEnv):
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

    metadata = {"render_modes": []}

    def __init__(self, env_name="reach-v3", split="train", horizon=500, seed=0):
        if split not in ("train", "test"):
            raise ValueError(f"Expected `split` to be 'train' or 'test'. Received: split={split!r}")
        metaworld = _import_metaworld()
        self._config = dict(env_name=env_name, split=split, horizon=horizon, seed=seed)
        try:
            self._benchmark = metaworld.ML1(env_name, seed=seed)
        except (KeyError, ValueError, AssertionError) as error:
            raise ValueError(f"Expected an ML1 environment name such as 'reach-v3'. Received: env_name={env_name!r} "
                             f"({error})") from error
        self._tasks = {"train": list(self._benchmark.train_tasks), "test": list(self._benchmark.test_tasks)}
        classes = self._benchmark.train_classes if split == "train" else self._benchmark.test_classes
        self._env = classes[env_name]()
        limit = int(getattr(self._env, "max_path_length", 500))
        if int(horizon) != horizon or not 1 <= horizon <= limit:
            raise ValueError(f"Expected `horizon` to be an integer in [1, {limit}]. Received: horizon={horizon!r}")
        self.env_name, self.split, self.horizon = env_name, split, int(horizon)
        inner = self._env.observation_space
        self.observation_space = spaces.Box(inner.low.astype(np.float32), inner.high.astype(np.float32),
                                            inner.shape, np.float32)
        self.action_space = spaces.Box(self._env.action_space.low.astype(np.float32),
                                       self._env.action_space.high.astype(np.float32),
                                       self._env.action_space.shape, np.float32)
        self._task = {"split": split, "index": 0}
        self._env.set_task(self._tasks[split][0])
        self._steps = 0

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
            self._env.set_task(self._tasks[split][index])
            self._task = {"split": split, "index": index}
        else:
            self._env.set_task(task)
            self._task = {"split": "raw", "index": -1, "task": task}

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
        self._env.close()


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
