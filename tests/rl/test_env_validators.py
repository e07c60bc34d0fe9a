"""gymnasium's and TF-Agents' own validators over every task environment keras_meta ships.

`BatchedNavigation2D` is a `gymnasium.vector.VectorEnv`: neither validator takes one
(`check_env` asserts a `gymnasium.Env`; the TF-Agents adapter wraps single envs), so its
per-sub-environment behaviour is checked against `Navigation2D` in test_task_envs.py.
"""

import importlib.util
import re
import warnings

import pytest

if importlib.util.find_spec("tf_agents") is None:  # importing it here would bypass the bridge's env setup
    pytest.skip("needs the tf-agents extra", allow_module_level=True)

from keras_meta.integrations import tf_agents as kmtfa  # noqa: E402  (sets TF_USE_LEGACY_KERAS first)

from gymnasium.utils.env_checker import check_env  # noqa: E402
from tf_agents.environments.utils import validate_py_environment  # noqa: E402

from keras_meta.rl import (AntDir, BernoulliBandit, HalfCheetahDir, HalfCheetahVel, Navigation2D,  # noqa: E402
                           PointMass2D)
from keras_meta.rl.metaworld import MetaWorldML1, metaworld_available  # noqa: E402

METAWORLD = pytest.mark.skipif(not metaworld_available()[0], reason="needs metaworld with its pinned MuJoCo")

# (make, whether check_env's render check can run here). MuJoCo's "human" mode opens a
# GLFW window, which aborts the process on a machine without a display.
ENVS = {
    "navigation": (lambda: Navigation2D(horizon=20), True),
    "bandit": (lambda: BernoulliBandit(num_arms=3), True),
    "point_mass": (lambda: PointMass2D(horizon=20), True),
    "half_cheetah_vel": (lambda: HalfCheetahVel(horizon=20), False),
    "half_cheetah_dir": (lambda: HalfCheetahDir(horizon=20), False),
    "ant_dir": (lambda: AntDir(horizon=20), False),
    "metaworld_reach": (lambda: MetaWorldML1("reach-v3", horizon=20), True),
}
PARAMS = [pytest.param(name, marks=METAWORLD) if name.startswith("metaworld") else name for name in ENVS]


def make(name):
    env = ENVS[name][0]()
    env.set_task(env.sample_tasks(1, seed=3)[0])
    return env


# check_env's advisories (warnings, not failures) that hold by design; any other warning
# it raises about an environment fails the test.
KNOWN_ADVISORIES = (
    # The task envs are constructed directly (their tasks are set by `set_task`), not
    # registered with `gymnasium.make`.
    "Not able to test alternative render modes due to the environment not having a spec.",
    # Positions and velocities are unbounded.
    "A Box observation space minimum value is -infinity. This is probably too low.",
    "A Box observation space maximum value is infinity. This is probably too high.",
    # The MuJoCo task envs wrap `gymnasium.make`'s env: `sample_tasks`/`set_task` live on
    # the wrapper, so the checker must see it.
    re.compile(r"The environment \(<\w+<TimeLimit<.*is different from the unwrapped version"),
    # Meta-World pads its observation with constant entries.
    "A Box observation space maximum and minimum values are equal.",
)


def _is_known(message):
    text = re.sub(r"\x1b\[\d+m", "", message).removeprefix("WARN: ")
    return any(text.startswith(known) if isinstance(known, str) else known.match(text)
               for known in KNOWN_ADVISORIES)


@pytest.mark.parametrize("name", PARAMS)
def test_gymnasium_check_env(name):
    env = make(name)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=not ENVS[name][1])
    finally:
        env.close()
    unexpected = [str(w.message) for w in caught if not _is_known(str(w.message))]
    assert not unexpected, unexpected


@pytest.mark.parametrize("name", PARAMS)
def test_tf_agents_validate_py_environment(name):
    env = make(name)
    try:
        validate_py_environment(kmtfa.GymnasiumPyEnvironment(env), episodes=3)
    finally:
        env.close()


@pytest.mark.parametrize("name", ["half_cheetah_vel", "ant_dir"])
def test_mujoco_task_env_spec_recreates_it(name):
    env = make(name)
    again = env.spec.make()
    try:
        assert type(again.get_wrapper_attr("sample_tasks").__self__) is type(env)
        assert again.get_wrapper_attr("horizon") == env.horizon == 20
    finally:
        env.close()
        again.close()
