"""Recipes: compose components into the three training stages; each reads top to bottom."""

from ..errors import ConfigError


def run_stage(cfg, *, resume: bool = True, callbacks=(), trust_remote_code: bool = False):
    """Dispatch a stage config (recipes/stage_config.py) to its recipe; returns the saved model folder.

    First, holding the output folder's lock (training/run_lock.py) and before any data or model
    loads: the output folder must be writable and, when resuming, hold a run made with the same
    settings (`common.check_output_dir`). `trust_remote_code` is the caller's to grant.
    """
    from .common import check_output_dir, hold_output

    options = dict(resume=resume, callbacks=callbacks, trust_remote_code=trust_remote_code)
    with hold_output(cfg):
        check_output_dir(cfg, resume)
        if cfg.stage == "pretrain" and cfg.objective == "mntp":
            from .mntp import run_mntp

            return run_mntp(cfg, **options)
        if cfg.stage == "pretrain":
            from .pretrain import run_pretrain

            return run_pretrain(cfg, **options)
        if cfg.stage == "unsupervised":
            from .unsupervised import run_unsupervised

            return run_unsupervised(cfg, **options)
        if cfg.stage == "supervised":
            from .supervised import run_supervised

            return run_supervised(cfg, **options)
    raise ConfigError(f"unknown stage {cfg.stage!r}")
