"""Diffusion core: schedules (pure functions -> tensors) and sampler steps (free functions)."""
