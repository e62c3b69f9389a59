"""Training: the accelerate-based trainer, checkpoints, schedules, resume; the objectives live in losses/."""
