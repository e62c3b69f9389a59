"""Training: the accelerate-based trainer, checkpoints, schedules, distributed helpers."""
