"""Recipes: compose components into the three training stages; each reads top to bottom."""

from ..errors import ConfigError


def run_stage(cfg, *, resume: bool = True, callbacks=()):
    """Dispatch a StageConfig to its recipe; returns the saved model folder.

    First, before any data or model loads: the output folder must be writable and, when resuming,
    hold a run made with the same settings (`common.check_output_dir`).
    """
    from .common import check_output_dir

    check_output_dir(cfg, resume)
    if cfg.stage == "pretrain":
        from .pretrain import run_pretrain

        return run_pretrain(cfg, resume=resume, callbacks=callbacks)
    if cfg.stage == "unsupervised":
        from .unsupervised import run_unsupervised

        return run_unsupervised(cfg, resume=resume, callbacks=callbacks)
    if cfg.stage == "supervised":
        from .supervised import run_supervised

        return run_supervised(cfg, resume=resume, callbacks=callbacks)
    raise ConfigError(f"unknown stage {cfg.stage!r}")
