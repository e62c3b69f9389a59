"""`llm2comp demo`: the main job, end to end, on the embedded default backbone.

1. resolve the default backbone (SmolLM2-135M from its PyPI package, converted once);
2. train the CPU-sized pipeline (the packaged quickstart.yaml: stage 1 KL compression, stage 2 SimCSE),
   resumable: a second run reuses finished stages and resumes an interrupted one;
3. evaluate the untrained backbone (mean pooling), the trained non-LLM baselines (`--baselines`,
   default tfidf and wordllama: TF-IDF+SVD and WordLlama, the stage-2 teacher) and the model after every stage on the
   offline suite and print them side by side (saved results are reused when their settings match);
4. load the saved model and run a small semantic search with it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .arguments import positive_int
from .search_cmd import DEFAULT_INSTRUCTION, EXAMPLE_DOCUMENTS, EXAMPLE_QUERIES, print_search, semantic_search

DEFAULT_CONFIG = "quickstart"  # the packaged recipe (src/llm2comp/configs/quickstart.yaml)
DEFAULT_BASELINES = "tfidf,wordllama"  # TF-IDF fits in ~10 s on one core; WordLlama is the stage-2 teacher too


def add_parser(sub) -> None:
    parser = sub.add_parser("demo", help="train, evaluate and use a model on the embedded default (CPU-sized)",
                            description="The main job end to end: train the quickstart pipeline on the embedded "
                            "SmolLM2-135M, evaluate it against the untrained backbone on the offline suite, "
                            "save it and run a semantic search. Rerunning reuses finished work.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--eval-items", type=positive_int, default=None,
                        help="cap items per evaluation task, >= 1 (default: the suite's own sizes)")
    parser.add_argument("--baselines", default=DEFAULT_BASELINES,
                        help="comma-separated non-LLM baselines evaluated beside the model: tfidf, wordllama (pip "
                        f"install wordllama==0.4.0.post1), or none (default: {DEFAULT_BASELINES})")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    parser.set_defaults(run=run, accepts_overrides=True)


def _cached_evaluation(model, output_dir: Path, *, pooling=None, max_items=None) -> dict:
    """Evaluate, or reuse `output_dir/results.json` when it was made for the same model, suite and settings."""
    from ..evaluation import EvalSettings, cached_evaluate

    return cached_evaluate(str(model), "offline", EvalSettings(pooling=pooling, max_items=max_items), output_dir,
                           name=str(model))


def run(args, overrides: list[str] = ()) -> int:
    import logging

    from ..atomic import ensure_writable_dir
    from ..models.default_model import resolve_default_model
    from ..recipes.packaged import demo_packages, missing_packages
    from ..recipes.pipeline import load_pipeline, run_pipeline

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    logging.getLogger("llm2comp").setLevel(logging.INFO)
    from ..evaluation.baselines import check_baselines, parse_baselines

    configs = load_pipeline(args.config, overrides)  # every argument checked before any work
    baselines = [] if args.no_eval else parse_baselines(args.baselines)
    missing_packages(demo_packages(configs, evaluate=not args.no_eval), command="llm2comp demo")  # all of them
    check_baselines(baselines)
    root = Path(configs[-1].output_dir).parent
    ensure_writable_dir(root, "output_dir")
    started = time.perf_counter()
    timings = {}

    print("[1/4] embedded default backbone")
    print(f"  {resolve_default_model()}")
    timings["backbone_s"] = time.perf_counter() - started

    print(f"[2/4] training ({args.config})")
    model_dir = run_pipeline(configs)
    timings["training_s"] = time.perf_counter() - started - sum(timings.values())
    print(f"  model saved to {model_dir}")

    if not args.no_eval:
        from ..evaluation import EvalSettings
        from ..evaluation.baselines import evaluate_baseline

        print("[3/4] offline evaluation: untrained backbone (mean pooling), "
              + "".join(f"{name}, " for name in baselines) + "then the model after each stage")
        columns = [("backbone (mean)", _cached_evaluation(configs[0].model, root / "eval" / "baseline-mean",
                                                           pooling="mean", max_items=args.eval_items))]
        for name in baselines:  # before the stages: the table's last - first stays trained - backbone
            result = evaluate_baseline(name, "offline", EvalSettings(max_items=args.eval_items),
                                       root / "eval" / "baselines" / name)
            columns.append((result["model"]["name"], result))
        for config in configs:
            stage_dir = Path(config.output_dir) / "model"
            folder = "trained" if config is configs[-1] else f"after-{config.stage}"
            columns.append((f"after {config.stage}", _cached_evaluation(stage_dir, root / "eval" / folder,
                                                                         max_items=args.eval_items)))
        from ..evaluation.report import stages_markdown

        print("\n".join(["## Offline suite, scores x 100", "", *stages_markdown(columns)]))
        timings["evaluation_s"] = time.perf_counter() - started - sum(timings.values())

    print("[4/4] the saved model in use: semantic search")
    from ..models.encoder import LLM2Comp

    model = LLM2Comp.from_pretrained(model_dir)
    print_search(EXAMPLE_QUERIES, semantic_search(model, EXAMPLE_QUERIES, EXAMPLE_DOCUMENTS,
                                                  instruction=DEFAULT_INSTRUCTION, top=2))
    timings["total_s"] = time.perf_counter() - started
    (root / "demo_timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2))
    print(f"\ndone in {timings['total_s'] / 60:.1f} min ({', '.join(f'{k} {v:.0f}' for k, v in timings.items())})")
    return 0
