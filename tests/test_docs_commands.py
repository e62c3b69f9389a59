"""Every `llm2comp` command shown in README.md and docs/ parses; every `train` command resolves its
config (dry run), so no documented command rots. The demo (`make demo`) runs the rest for real."""

import re
import shlex
from pathlib import Path

import pytest

from llm2comp.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands():
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if "llm2comp" not in line or line.startswith(("pip", "make", "git")):
                    continue
                words = shlex.split(line)
                start = words.index("llm2comp") + 1  # after `llm2comp`, `-m llm2comp` or `python -m llm2comp`
                found.append(pytest.param(words[start:], id=f"{doc.name}: {line[:60]}"))
    return found


COMMANDS = documented_commands()


def test_docs_show_commands():
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("argv", COMMANDS)
def test_documented_command_is_valid(argv, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(REPO)
    # documented commands may target a GPU (`--device cuda:0`): parse them as on a machine with 8 GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    if argv[0] == "train":
        assert main([*argv, "--dry-run"]) == 0, capsys.readouterr().err
        assert "stage:" in capsys.readouterr().out
    elif argv[0] == "study":  # every documented study config resolves all its runs
        assert main([*argv, "--dry-run"]) == 0, capsys.readouterr().err
        assert "objective:" in capsys.readouterr().out
    else:
        args, extra = build_parser().parse_known_args(argv)
        assert not extra, f"unknown options {extra}"
