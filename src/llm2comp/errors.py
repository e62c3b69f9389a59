"""The project's own error types: problems with what the user gave, not bugs.

`llm2comp` commands print an `LLM2CompError` as one line naming the file, line, field or value at
fault and exit with status 2; every other exception is a programming error and keeps its traceback.
Each type also derives from the built-in exception a caller would expect, so `except ValueError`
or `except FileNotFoundError` around library calls keeps working.
"""

from __future__ import annotations


class LLM2CompError(Exception):
    """Base class: a user-facing problem (input, configuration, files, environment)."""


class InvalidSetting(LLM2CompError, ValueError):
    """A value that cannot be used: an argument, a config key or its type, a setting out of range."""


class InvalidType(LLM2CompError, TypeError):
    """A value of the wrong type given to the Python API (e.g. `encode([None])`); names the index."""


class UnknownName(LLM2CompError, KeyError):
    """A name (task, suite, ...) that is not known; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(InvalidSetting):
    """A configuration file or key that cannot be used; the message names the file, line and key."""


class ResumeMismatch(ConfigError):
    """An output folder holds a run (checkpoint or finished model) made with different settings."""


class MissingFile(LLM2CompError, FileNotFoundError):
    """A file or folder that was named does not exist, or a model folder lacks one of its files."""


class CorruptFile(LLM2CompError, ValueError):
    """A file exists but cannot be read (truncated or corrupt weights, invalid JSON); names the file."""


class UntrustedCode(LLM2CompError, PermissionError):
    """A model folder needs Python code of its own, and the caller did not allow it."""


class UnsupportedModel(LLM2CompError, ValueError):
    """A model family whose layers cannot work as an LLM2Comp encoder; refused by name at load."""


class ModelLoadError(LLM2CompError, OSError):
    """A model could not be loaded (unknown Hub id, no network, unusable weights)."""


class OutputError(LLM2CompError, OSError):
    """An output location that cannot be written; checked before any work where possible."""


class MissingDependency(LLM2CompError, ImportError):
    """An optional package is needed for what was asked; the message says how to install it."""


class OutputInUse(OutputError):
    """Another run holds the output folder's lock (`OUTPUT_DIR/llm2comp.lock`); names its pid and host."""
