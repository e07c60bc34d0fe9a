"""NumPy twin of csrc/rollout.cc: the same recursion, vectorised over (task, env) rows."""

import numpy as np


def _boundaries(data, trial_level, episodes_per_trial):
    """Per step: (cut, bootstrap_from_next_values, terminated) as described in rollout.cc."""
    masks = data["masks"] > 0
    lengths = data["lengths"]
    horizon = masks.shape[-1]
    t = np.arange(horizon)
    last = t == (lengths[..., None] - 1)
    terminated = data["terminated"] & masks
    done = (data["terminated"] | data["truncated"]) & masks
    episode = data["episode_ids"]
    next_episode = np.concatenate([episode[..., 1:], episode[..., -1:]], axis=-1)
    through = (
        trial_level
        & done
        & ~last
        & (episode // episodes_per_trial == next_episode // episodes_per_trial)
    )
    cut = (done | last) & ~through
    return cut, terminated, masks


def discounted_returns(data, gamma, next_values=None, trial_level=False, episodes_per_trial=1):
    """R_t = r_t + gamma * (R_{t+1} if the episode continues else bootstrap), bootstrap = 0 on
    termination and next_values[t] on truncation or at the end of an unfinished row."""
    cut, terminated, masks = _boundaries(data, trial_level, episodes_per_trial)
    rewards = data["rewards"].astype(np.float64)
    boot = np.zeros_like(rewards) if next_values is None else next_values.astype(np.float64)
    boot = np.where(terminated, 0.0, boot)
    out = np.zeros_like(rewards)
    carry = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        value = rewards[..., t] + gamma * np.where(cut[..., t], boot[..., t], carry)
        carry = np.where(masks[..., t], value, 0.0)
        out[..., t] = carry
    return out.astype(np.float32)


def gae(data, values, next_values, gamma, lam, trial_level=False, episodes_per_trial=1):
    """delta_t = r_t + gamma * V_next - V(s_t); A_t = delta_t + gamma * lam * A_{t+1} * (1 - cut_t),
    V_next = V(s_{t+1}) inside an episode, 0 after termination, next_values[t] after truncation.
    Returns (advantages, returns = advantages + values), both float32."""
    cut, terminated, masks = _boundaries(data, trial_level, episodes_per_trial)
    rewards = data["rewards"].astype(np.float64)
    values = values.astype(np.float64)
    following = np.concatenate([values[..., 1:], np.zeros_like(values[..., :1])], axis=-1)
    boot = np.where(terminated, 0.0, next_values.astype(np.float64))
    next_value = np.where(cut, boot, following)
    delta = rewards + gamma * next_value - values
    adv = np.zeros_like(rewards)
    carry = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        value = delta[..., t] + np.where(cut[..., t], 0.0, gamma * lam * carry)
        carry = np.where(masks[..., t], value, 0.0)
        adv[..., t] = carry
    ret = np.where(masks, adv + values, 0.0)
    return adv.astype(np.float32), ret.astype(np.float32)
