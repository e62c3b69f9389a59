"""Counters and histograms in the Prometheus text exposition format (version 0.0.4), for `GET /metrics`.

Updated from the event loop and from the batching thread, hence one lock. A histogram keeps
cumulative bucket counts `le` (inputs <= bound), their `+Inf` total, and the sum of observations.
"""

from __future__ import annotations

import threading
from collections import defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, value in labels)
    return "{" + ",".join(f'{name}="{value}"' for (name, _), value in zip(labels, escaped)) + "}"


class Histogram:
    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += value


class Metrics:
    """The server's metrics; names are prefixed `llm2comp_`."""

    COUNTERS = {
        "requests_total": "HTTP requests answered, by endpoint and status code",
        "inputs_total": "inputs embedded",
        "prompt_tokens_total": "text tokens embedded (instructions included, after truncation)",
        "truncated_inputs_total": "inputs cut to the token limit",
        "forward_passes_total": "batches run through the model",
    }
    HISTOGRAMS = {
        "batch_inputs": ("inputs per forward pass", SIZE_BUCKETS),
        "batch_tokens": ("padded tokens per forward pass (rows x longest row)", TOKEN_BUCKETS),
        "forward_seconds": ("time of one forward pass", SECONDS_BUCKETS),
        "request_seconds": ("time from a request's arrival to its answer, /v1/embeddings", SECONDS_BUCKETS),
    }
    GAUGES = {
        "queue_inputs": "inputs waiting or running",
        "model_ready": "1 once the model is loaded",
    }

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms = {name: Histogram(bounds) for name, (_, bounds) in self.HISTOGRAMS.items()}
        self._gauges = {name: 0.0 for name in self.GAUGES}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        if name not in self.COUNTERS:
            raise KeyError(name)
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self._histograms[name].observe(value)

    def set(self, name: str, value: float) -> None:
        if name not in self.GAUGES:
            raise KeyError(name)
        with self._lock:
            self._gauges[name] = value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            if name in self._gauges:
                return self._gauges[name]
            if name in self._histograms:
                return self._histograms[name].total
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines = []
        with self._lock:
            for name, help_text in self.COUNTERS.items():
                lines += [f"# HELP llm2comp_{name} {help_text}", f"# TYPE llm2comp_{name} counter"]
                series = self._counters.get(name) or {(): 0.0}
                lines += [f"llm2comp_{name}{_labels(labels)} {value:g}" for labels, value in sorted(series.items())]
            for name, (help_text, _) in self.HISTOGRAMS.items():
                histogram = self._histograms[name]
                lines += [f"# HELP llm2comp_{name} {help_text}", f"# TYPE llm2comp_{name} histogram"]
                for bound, count in zip(histogram.bounds, histogram.counts):
                    lines.append(f'llm2comp_{name}_bucket{{le="{bound:g}"}} {count}')
                lines += [f'llm2comp_{name}_bucket{{le="+Inf"}} {histogram.total}',
                          f"llm2comp_{name}_sum {histogram.sum:g}", f"llm2comp_{name}_count {histogram.total}"]
            for name, help_text in self.GAUGES.items():
                lines += [f"# HELP llm2comp_{name} {help_text}", f"# TYPE llm2comp_{name} gauge",
                          f"llm2comp_{name} {self._gauges[name]:g}"]
        return "\n".join(lines) + "\n"
