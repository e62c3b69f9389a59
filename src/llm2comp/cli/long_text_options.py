"""`--long-texts` / `--overlap`: what `encode`, `search` and `eval` do with texts beyond max_length."""

from __future__ import annotations

from ..errors import InvalidSetting
from .arguments import non_negative_int

LONG_TEXT_CHOICES = ("truncate", "segments", "multivector")  # models/long_texts.py LONG_TEXT_MODES
WINDOWED_MODES = ("segments", "multivector")  # the modes that cut windows, where --overlap means something


def add_long_text_arguments(parser) -> None:
    parser.add_argument("--long-texts", choices=LONG_TEXT_CHOICES, default=None,
                        help="texts longer than the model's max_length: truncate (cut them), segments (compress "
                        "overlapping windows, token-weighted mean) or multivector (one vector per window, MaxSim); "
                        "default: the model's config (truncate unless saved otherwise)")
    parser.add_argument("--overlap", type=non_negative_int, default=None,
                        help="tokens shared by consecutive windows, with --long-texts segments or multivector "
                        "(default: the model's long_text_overlap, 32)")


def check_overlap_applies(overlap: int | None, mode: str | None, *, saved: bool = False) -> None:
    """Refuse `--overlap` where no windows are cut: `mode` is --long-texts, or (`saved`) the model's saved mode.

    With `mode` None (no --long-texts, model not loaded yet) nothing can be said; call again once the
    model is loaded, with its `config.long_texts` and `saved=True`.
    """
    if overlap is None or mode is None or mode in WINDOWED_MODES:
        return
    where = "the model's saved long_texts is 'truncate'" if saved else "--long-texts truncate"
    raise InvalidSetting(f"--overlap {overlap} applies only with --long-texts segments or multivector "
                         f"(where texts are cut into windows); {where}, so texts beyond max_length are cut off "
                         "and no windows overlap. Add --long-texts segments (or multivector), or drop --overlap")
