"""`llm2comp study`: the pretext study (stage-1 objectives on the same texts, scored against samples)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Trains every arm of the study config (an objective, or an objective with extra terms) on the same
texts, seeds and budget, scores each saved fraction of every run on the offline suite next to the
untrained floors, and reports the memory gap, effective dimension, memory-token correlation and a
decoding probe. Finished runs and evaluations are reused; an interrupted run resumes.

examples:
  llm2comp study --config configs/study_pretext.yaml
  llm2comp study --config configs/study_pretext.yaml --base.max_steps 40 --output_dir runs/study_small
"""


def add_parser(sub) -> None:
    parser = sub.add_parser("study", help="compare stage-1 objectives on one budget (report + table)",
                            description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="study YAML (see configs/study_pretext.yaml)")
    parser.add_argument("--no-resume", action="store_true", help="retrain runs even if finished")
    parser.add_argument("--dry-run", action="store_true", help="print every run's resolved config and exit")
    parser.set_defaults(run=run, accepts_overrides=True)


def run(args, overrides: list[str] = ()) -> int:
    import logging

    from ..recipes.study import load_study_config, plan_runs, run_study

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    logging.getLogger("llm2comp").setLevel(logging.INFO)
    study = load_study_config(args.config, overrides)
    runs = plan_runs(study)
    if args.dry_run:
        import yaml

        print(yaml.safe_dump({run.name: run.config.to_dict() for run in runs}, sort_keys=False))
        return 0
    run_study(study, resume=not args.no_resume)
    print((Path(study.output_dir) / "report.md").read_text())
    return 0
