"""Command-line arguments that several subcommands share, checked by argparse before any work."""

from __future__ import annotations

import argparse


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (`--batch-size`, `--top`, `--max-items`)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0 (`--overlap`, `--seed`)."""
    return _whole_number(text, 0)


def non_blank_text(text: str) -> str:
    """argparse type: a string that is not empty or whitespace only (`--query`, `--instruction`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or whitespace only")
    return text


def add_trust_remote_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let the model run Python code shipped in its folder or Hub repository (off by "
                        "default; a model folder can never turn it on itself)")


def device_name(text: str) -> str:
    """argparse type: a torch device this machine has (`cpu`, `cuda`, `cuda:1`, `mps`), checked before any work."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is available here (torch {torch.__version__}"
                                             f"{'' if torch.version.cuda else ', built without CUDA'}); use cpu")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                                             f"cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS (Apple GPU) is not available here; use cpu")
    return text


def add_backend(parser: argparse.ArgumentParser) -> None:
    from ..backends import BACKENDS

    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="what runs the model: torch (default), or the folder's ONNX export made by "
                        "`llm2comp export` (onnx: fp32; onnx-int8: int8 weights; CPU, ONNX Runtime)")
