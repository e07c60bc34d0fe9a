"""Typed stub of the native extension `keras_meta._core` (csrc/).

One section per C++ component; keep each section beside the others when adding one.
"""

import numpy as np
import numpy.typing as npt

_Range = tuple[float, float]
_F32 = npt.NDArray[np.float32]
_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]

# --- random (csrc/random.cc) ----------------------------------------------------------

def philox_uniform(seed: int, item: int, stream: int, count: int) -> _F32:
    """Uniform [0, 1) float32 draws number 0..count-1 of (seed, item, stream)."""

def derive_seed(seed: int, step: int) -> int:
    """The seed of training step `step` under run seed `seed` (pure function)."""

# --- regression families (csrc/regression.cc) -----------------------------------------
# Each returns (params [B, P], x [B, num_points, 1], y [B, num_points, 1]), all float32.

def sinusoid(
    meta_batch_size: int,
    num_points: int,
    seed: int,
    amplitude: _Range = (0.1, 5.0),
    phase: _Range = (0.0, 3.141592653589793),
    x_range: _Range = (-5.0, 5.0),
) -> tuple[_F32, _F32, _F32]:
    """y = A sin(x - phase); params = (A, phase)."""

def linear(
    meta_batch_size: int,
    num_points: int,
    seed: int,
    slope: _Range = (-3.0, 3.0),
    intercept: _Range = (-3.0, 3.0),
    x_range: _Range = (-5.0, 5.0),
) -> tuple[_F32, _F32, _F32]:
    """y = slope x + intercept; params = (slope, intercept)."""

def polynomial(
    meta_batch_size: int,
    num_points: int,
    seed: int,
    degree: int = 3,
    coefficients: _Range = (-1.0, 1.0),
    x_range: _Range = (-2.0, 2.0),
) -> tuple[_F32, _F32, _F32]:
    """y = sum_i c_i x^i; params = (c_0, ..., c_degree), degree in [0, 64]."""

def step_function(
    meta_batch_size: int,
    num_points: int,
    seed: int,
    location: _Range = (-2.5, 2.5),
    levels: _Range = (-1.0, 1.0),
    x_range: _Range = (-5.0, 5.0),
) -> tuple[_F32, _F32, _F32]:
    """y = left if x < location else right; params = (location, left, right)."""

# --- episode sampler (csrc/sampler.cc) ------------------------------------------------

class EpisodeSampler:
    """N-way, K-shot, Q-query episodes over a shared uint8 image array.

    Batches are a pure function of (seed, episode index) whatever the thread count;
    `keras_meta._twin.sampler.EpisodeSampler` reproduces them bit for bit.
    """

    def __init__(
        self,
        images: npt.NDArray[np.uint8],
        labels: _I64,
        split: _I64,
        ways: int,
        shots: int,
        queries: int,
        rotations: bool = False,
        num_threads: int = 0,
    ) -> None:
        """Keeps references to `images`, `labels` and `split` (no copies).

        Raises:
            TypeError: On a non-array or a dtype other than uint8 / int64 / int64.
            ValueError: On a wrong rank or shape, a non-contiguous array, negative labels,
                repeated split ids, split classes without examples, `ways` above the
                class pool, `shots + queries` above some class's examples, non-square
                images with rotations, or `num_threads` outside [0, 64].
        """

    def sample(
        self, meta_batch_size: int, seed: int, num_threads: int | None = None
    ) -> tuple[_F32, _I32, _F32, _I32]:
        """(support_x [B, N*K, H, W, C] in [0, 1], support_y [B, N*K], query_x
        [B, N*Q, H, W, C], query_y [B, N*Q]); arrays are 64-byte aligned."""

    def episode_indices(
        self, meta_batch_size: int, seed: int
    ) -> tuple[_I64, _I32, _I32, _I64, _I32, _I32]:
        """(support_index, support_rotation, support_y, query_index, query_rotation,
        query_y): what `sample` gathers."""

    @property
    def images(self) -> npt.NDArray[np.uint8]: ...
    @property
    def labels(self) -> _I64: ...
    @property
    def split(self) -> _I64: ...
    @property
    def ways(self) -> int: ...
    @property
    def shots(self) -> int: ...
    @property
    def queries(self) -> int: ...
    @property
    def rotations(self) -> bool: ...
    @property
    def num_threads(self) -> int: ...
    @property
    def num_classes(self) -> int:
        """len(split), times 4 with rotations."""
    @property
    def image_shape(self) -> tuple[int, int, int]: ...

# --- rollout buffer and batched navigation (csrc/rollout.cc, csrc/navigation.cc) ---
# Every object may be shared by Python threads: a buffer lets one `add`/`clear` or many
# readers (`gae`, `discounted_returns`, `len`) in at a time and a navigation env serialises
# its methods, each waiting with the GIL released. The views `data()` returns are read
# without that lock, so they may show a step half-written by a concurrent `add`.
class RolloutBuffer:
    def __init__(self, num_tasks: int, num_envs: int, horizon: int, obs_dim: int, action_dim: int = 1,
                 discrete: bool = False, episodes_per_trial: int = 1) -> None: ...
    def add(self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
            truncated: np.ndarray, next_observations: np.ndarray, valid: np.ndarray | None = None,
            task: int = -1) -> None: ...
    def gae(self, values: np.ndarray, next_values: np.ndarray, gamma: float = 0.99, lam: float = 0.95,
            trial_level: bool = False,
            out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]: ...
    def discounted_returns(self, gamma: float = 0.99, next_values: np.ndarray | None = None,
                           trial_level: bool = False, out: np.ndarray | None = None) -> np.ndarray: ...
    def data(self) -> dict[str, np.ndarray]: ...
    def clear(self) -> None: ...
    @property
    def shape(self) -> tuple[int, int, int]: ...
    @property
    def obs_dim(self) -> int: ...
    @property
    def action_dim(self) -> int: ...
    @property
    def discrete(self) -> bool: ...
    @property
    def episodes_per_trial(self) -> int: ...
    def __len__(self) -> int: ...

# Returns and GAE run the fastest kernel of csrc/discount.h the CPU has ("avx2" in float32,
# "scalar" in double precision); tests and benchmarks can choose another.
def _backward_kernels() -> list[str]: ...
def _backward_kernel() -> str: ...
def _set_backward_kernel(name: str) -> None: ...

class BatchedNavigation:
    def __init__(self, num_envs: int, horizon: int = 100, max_action: float = 0.1,
                 goal_tolerance: float = 0.01) -> None: ...
    def set_goals(self, goals: np.ndarray) -> None: ...
    def goals(self) -> np.ndarray: ...
    def reset(self) -> np.ndarray: ...
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Actions float32 of shape exactly (num_envs, 2): a transposed or flat array is refused
        with ValueError (reading it as (num_envs, 2) would mix up the sub-environments' actions)."""
    @property
    def num_envs(self) -> int: ...
    @property
    def horizon(self) -> int: ...
