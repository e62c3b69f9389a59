"""`llm2comp eval`: judge a model in one command (offline suite, the paper's MTEB set, or your files)."""

from __future__ import annotations

from ..models.default_model import DEFAULT_MODEL_NAME
from .arguments import (
    add_backend,
    add_trust_remote_code,
    device_name,
    non_blank_text,
    non_negative_int,
    positive_int,
)
from .long_text_options import add_long_text_arguments, check_overlap_applies

EPILOG = """examples:
  llm2comp eval --model smollm2-135m --pooling mean --output eval/mean      # untrained baseline, offline
  llm2comp eval --model runs/stage3/final --output eval/trained --compare eval/mean
  llm2comp eval --model runs/stage3/final --suite paper14 --output eval/mteb  # needs the Hugging Face Hub
  llm2comp eval --model runs/stage3/final --suite my_suite.yaml             # your files (docs/evaluation.md)
  llm2comp eval --model runs/stage3/final --suite longdoc --long-texts segments  # whole Wikipedia articles
  llm2comp eval --model runs/stage3/final --output eval/trained --baselines tfidf,wordllama  # beside real baselines
"""


def add_parser(sub) -> None:
    import argparse

    parser = sub.add_parser(
        "eval", help="evaluate a model on the offline suite, the paper's 14 MTEB tasks, or a suite YAML",
        description="Evaluate an embedding model and write results.json (MTEB-like), report.md (task | metric "
        "| n | score) and diagnostic plots (singular-value spectrum, memory-token correlation).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=non_blank_text, default=DEFAULT_MODEL_NAME,
                        help=f"saved LLM2Comp folder, Hub id or backbone folder (default: {DEFAULT_MODEL_NAME})")
    parser.add_argument("--pooling", choices=["memory_mean", "mean", "last"], default=None,
                        help="for a plain backbone: mean / last = the untrained token-pooling baselines")
    parser.add_argument("--suite", type=non_blank_text, default="offline",
                        help="offline (packaged data, default), longdoc (packaged long Wikipedia articles), "
                        "paper14 or longembed (MTEB, need the Hub), or FILE.yaml")
    parser.add_argument("--output", type=non_blank_text, default=None,
                        help="folder for results.json, report.md and plots")
    parser.add_argument("--compare", type=non_blank_text, default=None,
                        help="a saved results.json (or its folder), or another model to evaluate side by side")
    parser.add_argument("--compare-pooling", choices=["memory_mean", "mean", "last"], default=None,
                        help="--pooling for the --compare model (only when --compare names a model)")
    parser.add_argument("--max-items", type=positive_int, default=None,
                        help="cap every task at N items (seeded subsample)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of every subsample (default: a suite file's seed:, else 0)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--precision", choices=["float32", "int8", "binary"], default="float32",
                        help="score quantised embeddings (int8: calibrated on each task's documents; binary: "
                        "Hamming ranking) on the offline suites")
    parser.add_argument("--truncate-dim", type=positive_int, default=None,
                        help="score the first N components of every embedding (Matryoshka sizes; a size the model "
                        "was not trained for warns)")
    parser.add_argument("--rescore-multiplier", type=positive_int, default=None,
                        help="with --precision binary: rescore the best 10 x N candidates with the float query")
    parser.add_argument("--instructions", type=non_blank_text, default=None,
                        help="YAML/JSON file mapping task name -> instruction (overrides defaults; '' = none); "
                        "every name must be a task of the suite")
    parser.add_argument("--baselines", type=non_blank_text, default=None,
                        help="comma-separated trained non-LLM baselines to evaluate beside the model with the same "
                        "suite and settings: tfidf (TF-IDF+SVD), wordllama (needs: pip install "
                        "wordllama==0.4.0.post1); saved under OUTPUT/baselines/, reused on reruns")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the spectrum / memory diagnostics")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    add_long_text_arguments(parser)
    add_trust_remote_code(parser)
    add_backend(parser)
    parser.set_defaults(run=run)


def _read_instructions(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    from ..errors import ConfigError
    from ..yaml_files import read_yaml

    data = read_yaml(path, "instructions file")  # JSON is valid YAML
    if not isinstance(data, dict) or not data:
        found = "nothing" if not data else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected a mapping of task name -> instruction text, found {found}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: task {key!r}: the instruction must be text ('' = none), got "
                              f"{type(value).__name__}")
    return {str(k): v for k, v in data.items()}


def run(args) -> int:
    from ..errors import InvalidSetting
    from ..evaluation.baselines import attach_baselines, check_baselines, parse_baselines
    from ..evaluation.report import REPORT_NAME, model_label
    from ..evaluation.runner import compare_models, evaluate
    from ..evaluation.settings import EvalSettings

    if args.compare_pooling is not None and args.compare is None:
        raise InvalidSetting("--compare-pooling applies only with --compare naming a model to evaluate")
    check_overlap_applies(args.overlap, args.long_texts)
    baselines = parse_baselines(args.baselines)  # an unknown name or a missing package: before any work
    check_baselines(baselines)
    instructions = _read_instructions(args.instructions)
    settings = EvalSettings(max_items=args.max_items, seed=args.seed, batch_size=args.batch_size,
                            instructions=instructions, long_texts=args.long_texts, overlap=args.overlap,
                            pooling=args.pooling, diagnostics=not args.no_diagnostics, dtype=args.dtype,
                            device=args.device, trust_remote_code=args.trust_remote_code, backend=args.backend,
                            precision=args.precision, truncate_dim=args.truncate_dim,
                            rescore_multiplier=args.rescore_multiplier)
    # both read the suite (or check the Hub for MTEB suites) and the output folder before the model loads
    if args.compare is not None:
        results = compare_models(args.model, args.compare, args.suite, settings, compare_pooling=args.compare_pooling,
                                 output_dir=args.output, name=args.model)
    else:
        results = evaluate(args.model, args.suite, settings, output_dir=args.output, name=args.model)
    attach_baselines(results, baselines, args.suite, settings, args.output)  # rewrites report.md with their rows
    print(f"\n{model_label(results)} on {results['suite']}: average {100 * results['average']:.2f} over "
          f"{len(results['tasks'])} tasks in {results['elapsed_s']:.0f} s")
    if results.get("comparison"):
        comparison = results["comparison"]
        if comparison["shared_tasks"]:
            print(f"compared with {comparison['label_b']}: {100 * comparison['average_b']:.2f} (this model "
                  f"{100 * comparison['average_a']:.2f} on the {comparison['shared_tasks']} shared tasks)")
        else:
            print(f"compared with {comparison['label_b']}: no shared tasks")
    for entry in results.get("baselines", []):
        print(f"baseline {entry['label']}: average {100 * entry['average']:.2f}")
    if args.output:
        print(f"wrote {args.output}/results.json and {args.output}/{REPORT_NAME}")
    return 0
