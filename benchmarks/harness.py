"""What the benchmark scripts share: per-process memory, the matmul ceiling, one variant per subprocess,
medians and ratios, markdown tables.

The scripts import it as `import harness`: a script run as `python benchmarks/X.py` has benchmarks/ on
sys.path. It imports only the standard library (torch only inside `matmul_ceiling`), so a driver or a
child that imports it pays no memory for it, and a trivial child measures a trivial peak.

The child protocol (`emit` in the child, `run_child` in the driver): the child prints one line
`RESULT {json}` on stdout, with its own peak RSS (VmHWM) added as `peak_rss_mb`; the driver runs it
in a fresh interpreter and returns that dict, or raises `ChildFailed`.
"""

from __future__ import annotations

import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MARKER = "RESULT "
QUIET_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


class BenchmarkError(RuntimeError):
    """A benchmark cannot go on: a child failed, a figure it needs is missing. Not an LLM2CompError on
    purpose: importing llm2comp imports torch and transformers, which this module must not."""


class ChildFailed(BenchmarkError):
    """A child process exited non-zero, timed out or reported no result. The message's first line
    names the child, its exit status and its last stderr lines; `stderr` holds the whole tail."""

    def __init__(self, name: str, returncode: int | None, stderr: str, reason: str = "", tail: int = 4000):
        self.name, self.returncode, self.stderr = name, returncode, stderr or ""
        last = [line.strip() for line in self.stderr.strip().splitlines() if line.strip()][-3:]
        status = "timed out" if returncode is None else f"exit {returncode}"
        summary = f"{name} failed ({status}{', ' + reason if reason else ''})"
        if last:
            summary += ": " + " | ".join(last)
        super().__init__(summary + ("\n" + self.stderr[-tail:] if self.stderr.strip() else ""))


# ------------------------------------------------------------------------------------ memory
def _status_kb(pid: int | str, field: str) -> int | None:
    """A `kB` field (VmHWM, VmRSS) of /proc/<pid>/status; None when the file or the field is absent."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (MiB) of one process: VmHWM of /proc/<pid>/status, that process's own
    high-water mark. Not `ru_maxrss`: Linux carries it across fork + exec, so a child reports at least
    its parent's peak. Fallback where /proc has no VmHWM: `ru_maxrss` for this process (it may then
    include the parent's peak); for another process, BenchmarkError."""
    kb = _status_kb(pid, "VmHWM")
    if kb is not None:
        return kb / 1024
    if pid in ("self", os.getpid()):
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux
    raise BenchmarkError(f"no VmHWM in {PROC / str(pid) / 'status'}: cannot measure the peak memory of pid {pid}")


def rss_mb(pid: int | str = "self") -> float:
    """Current resident memory (MiB) of one process: VmRSS of /proc/<pid>/status; BenchmarkError
    where it cannot be read."""
    kb = _status_kb(pid, "VmRSS")
    if kb is None:
        raise BenchmarkError(f"no VmRSS in {PROC / str(pid) / 'status'}: cannot measure the memory of pid {pid}")
    return kb / 1024


# ------------------------------------------------------------------------------------ matmul ceiling
@dataclass(frozen=True)
class MatmulCeiling:
    """Timed square matmuls: `group_seconds[i]` is the time of `per_group` matmuls of `size`^3."""

    size: int
    dtype: str
    device: str
    per_group: int
    group_seconds: tuple[float, ...]

    def _rates(self) -> list[float]:
        return [2 * self.size**3 * self.per_group / s for s in self.group_seconds]

    @property
    def flops(self) -> float:
        """FLOP/s over the whole measurement (all matmuls / all their time)."""
        return 2 * self.size**3 * self.per_group * len(self.group_seconds) / sum(self.group_seconds)

    @property
    def median_flops(self) -> float:
        """Median FLOP/s of the groups (robust to a neighbour's burst on a shared machine)."""
        return statistics.median(self._rates())

    @property
    def best_flops(self) -> float:
        """Fastest group's FLOP/s."""
        return max(self._rates())

    @property
    def samples(self) -> int:
        return len(self.group_seconds)


def matmul_ceiling(size: int = 2048, seconds: float = 3.0, dtype=None, device: str = "cpu",
                   per_group: int | None = None, min_samples: int = 5) -> MatmulCeiling:
    """The machine's matmul rate, to quote MFU-like ratios against: `size` x `size` torch matmuls
    (fp32 unless `dtype`) on `device`, with the current torch thread count, after 3 warm-up matmuls,
    for `seconds` and at least `min_samples` groups. A group is one matmul on CPU and 10 on CUDA
    (timed between synchronisations, so that kernel launches overlap as in a model)."""
    import torch

    cuda = str(device).startswith("cuda")
    per_group = per_group or (10 if cuda else 1)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    a = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    b = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    for _ in range(3):
        a @ b
    sync()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_samples:
        start = time.perf_counter()
        for _ in range(per_group):
            a @ b
        sync()
        times.append(time.perf_counter() - start)
    return MatmulCeiling(size, str(a.dtype).replace("torch.", ""), str(device), per_group, tuple(times))


# ------------------------------------------------------------------------------------ subprocesses
def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child, offline and without tokenizer / transformers chatter,
    plus `overrides`."""
    return {**os.environ, **QUIET_ENV, **overrides}


def emit(result: Mapping) -> None:
    """In a child: print `result` as the `RESULT {json}` line `run_child` reads, with this process's
    peak RSS as `peak_rss_mb` unless the result has one (measure it last: it only grows)."""
    result = dict(result)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    print(MARKER + json.dumps(result), flush=True)


def run_child(command: Sequence[str], name: str, *, env: Mapping[str, str] | None = None,
              timeout: float | None = None, result_file: str | Path | None = None) -> dict:
    """Run `command` in a fresh process (its memory and caches are its own) and return its result: the
    last `RESULT {json}` line of its stdout, or the JSON in `result_file` when given (a child that
    writes its result, e.g. rank 0 of a torchrun). Raises ChildFailed naming `name` when the child
    exits non-zero, runs past `timeout` seconds, or leaves no readable result."""
    try:
        done = subprocess.run(list(command), env=None if env is None else dict(env), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr
        raise ChildFailed(name, None, stderr or "", f"after {timeout} s") from None
    if done.returncode != 0:
        raise ChildFailed(name, done.returncode, done.stderr)
    if result_file is not None:
        try:
            result = json.loads(Path(result_file).read_text())
        except (OSError, ValueError) as error:
            raise ChildFailed(name, 0, done.stderr, f"no result in {result_file}: {error}") from None
    else:
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
        if not lines:
            raise ChildFailed(name, 0, done.stderr, "no RESULT line on its stdout")
        try:
            result = json.loads(lines[-1][len(MARKER):])
        except ValueError as error:
            raise ChildFailed(name, 0, done.stderr, f"its RESULT line is not JSON: {error}") from None
    return result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server or torchrun child)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------ medians and ratios
def median(values: Iterable[float], skip: int = 0, what: str = "values") -> float:
    """Median of `values` after dropping the first `skip` (warm-up steps). BenchmarkError naming
    `what` when none are left."""
    kept = list(values)[skip:]
    if not kept:
        raise BenchmarkError(f"median of {what}: nothing left after dropping {skip} warm-up value(s)")
    return statistics.median(kept)


def ratio(value: float, baseline: float | None) -> float:
    """value / baseline; NaN when there is no baseline or it is 0 (`format_ratio` shows it as '-')."""
    if baseline is None or baseline == 0 or value is None:
        return math.nan
    return value / baseline


def ratios(results: Mapping[str, Mapping], baseline: str, key: str | Callable[[Mapping], float]) -> dict[str, float]:
    """Each variant's figure over the baseline variant's, both measured in the same run (so a shared,
    busy machine moves both): `key` names the figure or computes it from a variant's result. The
    baseline maps to 1.0; BenchmarkError when it is not among `results`."""
    if baseline not in results:
        raise BenchmarkError(f"baseline {baseline!r} is not among the variants run: {sorted(results)}")
    figure = key if callable(key) else (lambda result: result[key])
    base = figure(results[baseline])
    return {variant: ratio(figure(result), base) for variant, result in results.items()}


def format_ratio(value: float, digits: int = 2) -> str:
    """'1.23x', or '-' for NaN (no baseline)."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}x"


# ------------------------------------------------------------------------------------ tables
def markdown_table(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A GitHub markdown table: `header`, then one line per row (cells through `str`; '|' escaped and
    newlines folded so that a cell cannot break the table). `align` has one letter per column,
    'l' (`---`) or 'r' (`---:`); default all 'l'. BenchmarkError when a row or `align` has another
    number of columns than the header."""
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise BenchmarkError(f"align {align!r}: need one of 'l' / 'r' per column ({len(header)})")

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for number, row in enumerate(rows, 1):
        row = list(row)
        if len(row) != len(header):
            raise BenchmarkError(f"table row {number} has {len(row)} cells, the header {len(header)}: {row}")
        lines.append(line(row))
    return "\n".join(lines)
