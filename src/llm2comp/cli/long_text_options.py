"""`--long-texts` / `--overlap`: what `encode`, `search` and `eval` do with texts beyond max_length."""

from __future__ import annotations

LONG_TEXT_CHOICES = ("truncate", "segments", "multivector")  # models/long_texts.py LONG_TEXT_MODES


def add_long_text_arguments(parser) -> None:
    parser.add_argument("--long-texts", choices=LONG_TEXT_CHOICES, default=None,
                        help="texts longer than the model's max_length: truncate (cut them), segments (compress "
                        "overlapping windows, token-weighted mean) or multivector (one vector per window, MaxSim); "
                        "default: the model's config (truncate unless saved otherwise)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="tokens shared by consecutive windows (default: the model's long_text_overlap, 32)")
