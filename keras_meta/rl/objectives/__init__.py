"""Policy-optimisation objectives shared by the RL meta-learners: TRPO and PPO."""
