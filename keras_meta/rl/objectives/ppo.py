"""PPO's clipped surrogate (Schulman et al., 2017), shared by MAML-RL (ProMP-style) and RL²."""

import tensorflow as tf


def clipped_surrogate(ratio, advantages, clip_ratio):
    """Per-step clipped objective `min(r A, clip(r, 1 - eps, 1 + eps) A)` (to be maximised).

    Args:
        ratio: Likelihood ratios `r_t = pi(a_t | s_t) / pi_old(a_t | s_t)`.
        advantages: Advantages `A_t`, broadcastable to `ratio`.
        clip_ratio: `eps`.

    Returns:
        A tensor shaped like `ratio`.
    """
    clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return tf.minimum(ratio * advantages, clipped * advantages)


def clip_fraction(ratio, clip_ratio):
    """1.0 where `|r - 1| > eps` (the clip is active), else 0.0, per step."""
    return tf.cast(tf.abs(ratio - 1.0) > clip_ratio, tf.float32)
