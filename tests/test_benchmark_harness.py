"""benchmarks/harness.py: per-process peak memory, the child protocol, medians and ratios, tables.

The harness is loaded from its file (the scripts import it as `harness`, with benchmarks/ on
sys.path); children are fresh interpreters that put benchmarks/ on their own sys.path.
"""

from __future__ import annotations

import importlib.util
import math
import os
import resource
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load_harness():
    if "harness" in sys.modules and Path(sys.modules["harness"].__file__) == BENCHMARKS / "harness.py":
        return sys.modules["harness"]
    spec = importlib.util.spec_from_file_location("harness", BENCHMARKS / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


harness = load_harness()


def child(code: str) -> list[str]:
    """A python command running `code` after `import harness`, as a benchmark's worker would."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import harness\n{code}"]


# ------------------------------------------------------------------------------------ medians and ratios
def test_median_drops_the_warm_up_steps():
    assert harness.median([100.0, 3.0, 1.0, 2.0], skip=1) == 2.0  # the slow first step is not counted
    assert harness.median([9.0, 1.0, 4.0]) == 4.0
    assert harness.median(x for x in (5.0, 1.0, 2.0, 4.0)) == 3.0  # even count: mean of the middle two
    with pytest.raises(harness.BenchmarkError, match="median of one-copy s/step: nothing left after dropping 1"):
        harness.median([7.0], skip=1, what="one-copy s/step")


def test_ratios_against_the_baseline_of_the_same_run():
    results = {"uncached": {"peak": 4000.0, "model": 1000.0}, "cached": {"peak": 2500.0, "model": 1000.0}}
    assert harness.ratios(results, "uncached", "peak") == {"uncached": 1.0, "cached": 0.625}
    above = harness.ratios(results, "uncached", lambda r: r["peak"] - r["model"])
    assert above == {"uncached": 1.0, "cached": 0.5}
    with pytest.raises(harness.BenchmarkError, match="baseline 'two-copy' is not among the variants run"):
        harness.ratios(results, "two-copy", "peak")
    assert harness.ratio(3.0, 2.0) == 1.5
    assert math.isnan(harness.ratio(3.0, 0)) and math.isnan(harness.ratio(3.0, None))
    assert harness.format_ratio(1.5) == "1.50x" and harness.format_ratio(2.25, digits=1) == "2.2x"
    assert harness.format_ratio(harness.ratio(1.0, None)) == "-"


# ------------------------------------------------------------------------------------ tables
def test_markdown_table_lines_alignment_and_escaping():
    table = harness.markdown_table(["mode", "s", "ratio"], [["truncate", 1.5, "1.00x"], ["a|b", "two\nlines", ""]],
                                   align="lrr")
    assert table.splitlines() == ["| mode | s | ratio |", "|---|---:|---:|", "| truncate | 1.5 | 1.00x |",
                                  "| a\\|b | two lines |  |"]
    assert harness.markdown_table(["x"], []).splitlines() == ["| x |", "|---|"]
    with pytest.raises(harness.BenchmarkError, match="table row 2 has 1 cells, the header 2"):
        harness.markdown_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(harness.BenchmarkError, match="align 'lx'"):
        harness.markdown_table(["a", "b"], [], align="lx")


# ------------------------------------------------------------------------------------ the child protocol
def test_run_child_returns_the_last_result_line():
    code = ("print('library chatter on stdout')\nprint('RESULT {\"old\": 1}')\n"
            "harness.emit({'variant': 'ours', 'seconds': [1.5, 2.0]})\nprint('after')")
    result = harness.run_child(child(code), "ours")
    assert result["variant"] == "ours" and result["seconds"] == [1.5, 2.0] and "old" not in result
    assert result["peak_rss_mb"] > 1  # added by emit: the child's own VmHWM
    kept = harness.run_child(child("harness.emit({'peak_rss_mb': 12.5})"), "given")
    assert kept == {"peak_rss_mb": 12.5}


def test_run_child_reads_a_result_file(tmp_path):
    out = tmp_path / "result.json"
    result = harness.run_child(child(f"open({str(out)!r}, 'w').write('{{\"losses\": [0.5]}}')"), "rank 0",
                               result_file=out)
    assert result == {"losses": [0.5]}
    with pytest.raises(harness.ChildFailed, match=r"^missing failed \(exit 0, no result in .*nothere\.json"):
        harness.run_child(child("pass"), "missing", result_file=tmp_path / "nothere.json")


def test_a_failing_child_raises_a_named_error():
    code = "sys.stderr.write('loading\\nstep 1\\n'); raise SystemExit('worker broke: out of memory')"
    with pytest.raises(harness.ChildFailed) as caught:
        harness.run_child(child(code), "cached-keep1")
    error = caught.value
    assert isinstance(error, harness.BenchmarkError) and error.returncode == 1 and error.name == "cached-keep1"
    first = str(error).splitlines()[0]
    assert first == "cached-keep1 failed (exit 1): loading | step 1 | worker broke: out of memory"
    assert "worker broke" in error.stderr

    with pytest.raises(harness.ChildFailed, match=r"^silent failed \(exit 0, no RESULT line on its stdout\)"):
        harness.run_child(child("print('no marker')"), "silent")
    with pytest.raises(harness.ChildFailed, match=r"^garbled failed \(exit 0, its RESULT line is not JSON"):
        harness.run_child(child("print('RESULT {not json')"), "garbled")
    with pytest.raises(harness.ChildFailed, match=r"^slow failed \(timed out, after 1 s\)") as slow:
        harness.run_child(child("import time; time.sleep(30)"), "slow", timeout=1)
    assert slow.value.returncode is None


def test_child_env_is_offline_and_quiet_with_overrides(monkeypatch):
    monkeypatch.setenv("LLM2COMP_HARNESS_PROBE", "kept")
    env = harness.child_env(OMP_NUM_THREADS="3", HF_HUB_OFFLINE="0")
    assert env["LLM2COMP_HARNESS_PROBE"] == "kept" and env["OMP_NUM_THREADS"] == "3"
    assert env["HF_HUB_OFFLINE"] == "0" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["TRANSFORMERS_VERBOSITY"] == "error"
    assert harness.run_child(child("import os; harness.emit({'t': os.environ['OMP_NUM_THREADS']})"), "env",
                             env=env)["t"] == "3"


def test_free_port_can_be_bound():
    port = harness.free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


# ------------------------------------------------------------------------------------ memory
def test_peak_rss_of_a_child_is_its_own():
    """A child that touches 200 MB reports >= 150 MB; a trivial child reports far less, although this
    pytest process (torch imported, plus 300 MB held here while it runs) is much bigger: `ru_maxrss`
    would carry this parent's peak into the child."""
    big = harness.run_child(child("block = b'x' * (200 * 2**20)\nharness.emit({'size': len(block)})"), "big")
    ballast = b"y" * (300 * 2**20)
    trivial = harness.run_child(child("harness.emit({})"), "trivial")
    parent = harness.peak_rss_mb()
    del ballast
    assert big["peak_rss_mb"] >= 150
    assert trivial["peak_rss_mb"] < 60 and big["peak_rss_mb"] - trivial["peak_rss_mb"] >= 150
    assert parent >= 300 > trivial["peak_rss_mb"]


def test_memory_is_read_from_proc_status_with_a_fallback(tmp_path, monkeypatch):
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "status").write_text("Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t    2048 kB\n"
                                             "VmRSS:\t    1536 kB\n")
    monkeypatch.setattr(harness, "PROC", tmp_path)
    assert harness.peak_rss_mb(123) == 2.0 and harness.rss_mb(123) == 1.5
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fallback = harness.peak_rss_mb()  # no tmp_path/self/status: ru_maxrss of this process
    assert before <= fallback <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert harness.peak_rss_mb(os.getpid()) == fallback
    with pytest.raises(harness.BenchmarkError, match="no VmHWM in .*/456/status: cannot measure .* pid 456"):
        harness.peak_rss_mb(456)
    with pytest.raises(harness.BenchmarkError, match="no VmRSS in .*/self/status"):
        harness.rss_mb()


# ------------------------------------------------------------------------------------ matmul ceiling
def test_matmul_ceiling_rates():
    timed = harness.MatmulCeiling(size=10, dtype="float32", device="cpu", per_group=2, group_seconds=(1.0, 2.0, 4.0))
    assert timed.flops == pytest.approx(2 * 1000 * 2 * 3 / 7)  # all matmuls over all their time
    assert timed.median_flops == pytest.approx(2000.0) and timed.best_flops == pytest.approx(4000.0)
    assert timed.samples == 3

    measured = harness.matmul_ceiling(size=64, seconds=0.05, min_samples=7)
    assert measured.samples >= 7 and measured.per_group == 1 and measured.dtype == "float32"
    assert measured.best_flops >= measured.median_flops > 0 and measured.flops > 0

