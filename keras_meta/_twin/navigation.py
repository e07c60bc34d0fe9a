"""NumPy twin of csrc/navigation.cc (batched 2D navigation with NEXT_STEP autoreset)."""

import numpy as np


class BatchedNavigation:
    def __init__(self, num_envs, horizon=100, max_action=0.1, goal_tolerance=0.01):
        self.num_envs, self.horizon = int(num_envs), int(horizon)
        self._max = np.float32(max_action)
        self._tol = np.float32(goal_tolerance)
        self._pos = np.zeros((num_envs, 2), np.float32)
        self._goal = np.zeros((num_envs, 2), np.float32)
        self._steps = np.zeros(num_envs, np.int64)
        self._needs_reset = np.zeros(num_envs, bool)

    def set_goals(self, goals):
        self._goal = np.array(goals, np.float32).reshape(self.num_envs, 2)

    def goals(self):
        return self._goal.copy()

    def reset(self):
        self._pos[:] = 0
        self._steps[:] = 0
        self._needs_reset[:] = False
        return self._pos.copy()

    def step(self, actions):
        actions = np.asarray(actions, np.float32)
        resetting = self._needs_reset.copy()
        moved = self._pos + np.clip(actions, -self._max, self._max)
        diff = moved - self._goal
        dist = np.sqrt(diff[:, 0].astype(np.float64) ** 2 + diff[:, 1].astype(np.float64) ** 2)
        steps = self._steps + 1
        terminated = np.all(np.abs(diff) < self._tol, axis=1)
        truncated = ~terminated & (steps >= self.horizon)
        self._pos = np.where(resetting[:, None], np.float32(0), moved).astype(np.float32)
        self._steps = np.where(resetting, 0, steps)
        rewards = np.where(resetting, 0.0, -dist).astype(np.float32)
        terminated &= ~resetting
        truncated &= ~resetting
        self._needs_reset = terminated | truncated
        return self._pos.copy(), rewards, terminated, truncated
