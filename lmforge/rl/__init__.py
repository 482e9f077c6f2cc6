"""Reinforcement learning: rewards, rollouts and the PPO / SPO / GRPO machinery."""
