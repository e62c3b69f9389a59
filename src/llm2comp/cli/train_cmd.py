"""`llm2comp train`: run a training stage from a YAML config, any key overridable."""

from __future__ import annotations

import argparse

from .arguments import add_trust_remote_code

STAGE_HELP = """\
stages (the config's `stage` key, or --stage):
  pretrain      stage 1, context-compression pre-training; --objective kl (default, CTKD) | nll | reconstruction
                | mntp (LLM2Vec's masked next-token prediction, the paper's baseline; num_memory_tokens 0)
  unsupervised  stage 2, SimCSE: two dropout views of each sentence, InfoNCE over the batch
  supervised    stage 3, query/positive/hard-negative InfoNCE over the global batch

data sources (the `data` key):
  {type: wiki_default}                               bundled Wikipedia excerpt (offline default)
  {type: text, path: FILE}                           one document per line (or blank-line separated)
  {type: jsonl, path: FILE, field: text}             JSON objects with a text field
  {type: hf, name: wikitext, config: wikitext-103-raw-v1, split: train, field: text}

any config key the stage reads can be overridden: --max_steps 50 --lr 3e-5 --lora.r 8 --data.path my.txt
(keys a stage does not read, wrong types and malformed YAML are errors naming the file and line)

resuming: a killed or interrupted (Ctrl-C, exit status 130) run continues from its last checkpoint
with the same command. Settings that change what is trained (lr, batch_size, objective, seed, data,
...) must be the ones it started with; harmless ones (max_steps to extend a run, save_every,
keep_last, log_every) may change with --accept-resume-changes. Otherwise use another output_dir, or
--no-resume to start over: its old checkpoints are removed, and a finished OUTPUT_DIR/model (and
snapshots/) is moved aside to model.previous-<time>/, never deleted.

the output folder: one run at a time (OUTPUT_DIR/llm2comp.lock names the run using it; a second run
stops at once; a lock left by a killed run on this machine is taken over). OUTPUT_DIR/model is
replaced only when it is a model folder holding nothing else, and OUTPUT_DIR may not be, lie inside
or contain the input model folder; files that are not llm2comp's are never deleted (the run stops
before any work, naming them).

examples:
  llm2comp train --config configs/pretrain_quickstart.yaml
  llm2comp train --config configs/pretrain_mntp_quickstart.yaml   # the MNTP baseline, same data and budget
  llm2comp train --config configs/quickstart.yaml          # all stages of a pipeline file, in order
  accelerate launch --num_processes 8 -m llm2comp train --config configs/pretrain_llama2_7b.yaml
"""


def add_parser(sub) -> None:
    parser = sub.add_parser("train", help="run a training stage (pretrain | unsupervised | supervised)",
                            description="Train an LLM2Comp model. Checkpoints are written atomically to "
                            "OUTPUT_DIR/checkpoints and a killed run resumes where it stopped; the final model is "
                            "saved to OUTPUT_DIR/model.", epilog=STAGE_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="YAML recipe or pipeline: a path, or a packaged recipe's name (`llm2comp configs "
                        "list`); required: there is no default run, so "
                        "nothing trains until you say what (e.g. configs/quickstart.yaml, minutes on a CPU)")
    parser.add_argument("--stage", default=None, choices=["pretrain", "unsupervised", "supervised"])
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore existing checkpoints and a finished model in OUTPUT_DIR (start over)")
    parser.add_argument("--accept-resume-changes", action="store_true",
                        help="resume even though harmless settings changed (max_steps to extend a run, save_every, "
                        "keep_last, log_every); settings that change what is trained never may")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config(s) of every stage and exit without training")
    add_trust_remote_code(parser)
    parser.set_defaults(run=run, accepts_overrides=True)


def run(args, overrides: list[str] = ()) -> int:
    import logging

    from ..recipes.stage_config import load_stage_config

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    logging.getLogger("llm2comp").setLevel(logging.INFO)
    from ..recipes import run_stage
    from ..recipes.packaged import resolve_recipe
    from ..recipes.pipeline import is_pipeline_file, load_pipeline, run_pipeline

    args.config = resolve_recipe(args.config)  # an existing path, else a packaged name (`quickstart`)
    if is_pipeline_file(args.config):
        configs = load_pipeline(args.config, overrides)
        if args.stage:
            configs = [c for c in configs if c.stage == args.stage]
            if not configs:
                from ..errors import ConfigError

                raise ConfigError(f"{args.config} has no {args.stage!r} stage (--stage {args.stage})")
    else:
        defaults = {"stage": args.stage} if args.stage else {}
        configs = [load_stage_config(args.config, overrides, **defaults)]
    if args.accept_resume_changes:
        for config in configs:
            config.accept_resume_changes = True
    if args.dry_run:
        import yaml

        print(yaml.safe_dump([c.to_dict() for c in configs], sort_keys=False))
        return 0
    options = dict(resume=not args.no_resume, trust_remote_code=args.trust_remote_code)
    path = run_pipeline(configs, **options) if len(configs) > 1 else run_stage(configs[0], **options)
    print(f"model saved to {path}")
    return 0
