"""Recipes: compose components into the three training stages; each reads top to bottom."""


def run_stage(cfg, *, resume: bool = True, callbacks=()):
    """Dispatch a StageConfig to its recipe; returns the saved model folder."""
    if cfg.stage == "pretrain":
        from .pretrain import run_pretrain

        return run_pretrain(cfg, resume=resume, callbacks=callbacks)
    if cfg.stage == "unsupervised":
        from .unsupervised import run_unsupervised

        return run_unsupervised(cfg, resume=resume, callbacks=callbacks)
    if cfg.stage == "supervised":
        from .supervised import run_supervised

        return run_supervised(cfg, resume=resume, callbacks=callbacks)
    raise ValueError(f"unknown stage {cfg.stage!r}")
