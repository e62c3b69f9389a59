"""`llm2comp plan`: parameters, memory, FLOPs and run time of a training config, without loading weights."""

from __future__ import annotations

import argparse
import json

from .arguments import positive_int

EPILOG = """\
examples:
  llm2comp plan --config configs/llama2_7b_pipeline.yaml --gpus 8 --gpu-memory 80GB
  llm2comp plan --config configs/pretrain_llama2_7b.yaml --gpus 1 --gpu-memory 24GB --backbone-config llama2-7b/
  llm2comp plan --config configs/llama2_7b_pipeline.yaml --accelerate-config fsdp.yaml --json
  llm2comp plan --config configs/supervised_llama2_7b.yaml --cache_chunk_size 16   # any config key overrides

Only the backbone's config.json is read (a Hub id needs the Hub or its cache; --backbone-config
points at a local copy). Every number is an estimate: see docs/planning.md for the formulas and
how they compare with measured peaks.
"""


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_parser(sub) -> None:
    parser = sub.add_parser("plan", help="estimate memory, FLOPs and run time of a training config (no weights)",
                            description="Per stage: parameters, trainable parameters, per-device memory (weights, "
                            "LoRA + optimizer, activations with and without gradient checkpointing), tokens and "
                            "FLOPs per step, step time and run time at a stated MFU. Estimates.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a training YAML (one stage or a pipeline)")
    parser.add_argument("--stage", default=None, choices=["pretrain", "unsupervised", "supervised"],
                        help="only this stage of a pipeline")
    parser.add_argument("--gpus", type=positive_int, default=None, help="GPUs (processes); default 1")
    parser.add_argument("--gpu-memory", default="80GB", help="memory of one GPU, e.g. 80GB, 24GB (GB = GiB)")
    parser.add_argument("--mfu", type=_fraction, default=0.4, help="share of the peak FLOP/s reached (default 0.4)")
    parser.add_argument("--gpu-tflops", type=_fraction, default=989.0,
                        help="peak dense bf16 TFLOP/s of one GPU (default 989: H100/H200 SXM; A100 312, 4090 165)")
    parser.add_argument("--shard", action="store_true", help="FSDP FULL_SHARD / ZeRO-3: divide weights and states")
    parser.add_argument("--accelerate-config", default=None,
                        help="an `accelerate config` YAML: its num_processes and FSDP / ZeRO-3 sharding")
    parser.add_argument("--backbone-config", default=None,
                        help="folder with the backbone's config.json, instead of the config's `model`")
    parser.add_argument("--text-tokens", type=positive_int, default=None,
                        help="typical tokens per text (default: every text at the config's maximum)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run, accepts_overrides=True)


def run(args, overrides: list[str] = ()) -> int:
    from ..planning import Hardware, hardware_from_accelerate, parse_memory, plan_run, render_markdown
    from ..recipes.packaged import resolve_recipe

    args.config, args.accelerate_config = resolve_recipe(args.config), resolve_recipe(args.accelerate_config)
    settings = hardware_from_accelerate(args.accelerate_config) if args.accelerate_config else {}
    hardware = Hardware(gpus=args.gpus or settings.get("gpus", 1), gpu_memory=parse_memory(args.gpu_memory),
                        mfu=args.mfu, gpu_tflops=args.gpu_tflops, shard=args.shard or settings.get("shard", False))
    result = plan_run(args.config, hardware, overrides=list(overrides), stage=args.stage,
                      backbone_config=args.backbone_config, text_tokens=args.text_tokens)
    print(json.dumps(result, indent=2) if args.json else render_markdown(result))
    return 0
