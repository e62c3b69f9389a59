"""Training: the accelerate-based trainer, checkpoints, schedules, the stage objectives' batch builders."""
