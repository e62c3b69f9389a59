"""Load test of `llm2comp serve`: N concurrent clients on loopback against offline `encode` of the same texts.

    .venv/bin/python benchmarks/serve_load.py                      # 200 clients, 256 texts
    .venv/bin/python benchmarks/serve_load.py --clients 200,20 --repeats 2   # alternating runs
    .venv/bin/python benchmarks/serve_load.py --quick              # smoke run: 40 texts, 20 clients

Texts: benchmarks/encode.py's fixed-seed mix of real reviews, plot summaries and news paragraphs.

- offline: `LLM2Comp.encode(texts, batch_size=32, normalize_embeddings=True)` in a fresh process
  (`--backend`: the same backend as the server),
  after a 4-text warm-up. Runs alternate (offline, the server runs, offline, ...) and each server
  run is compared with the mean of the offline runs just before and after it, so that a shared,
  busy machine moves both sides of a ratio together.
- server:  `llm2comp serve` in a fresh process; after a 4-text warm-up request, N asyncio clients
  (one keep-alive connection each) take the texts from one shared list, `--texts-per-request` at a
  time, as base64 (what the openai client asks for), until the list is empty or `--max-seconds`
  pass. Latency = from sending a request to reading its whole answer.

Reported per client count: texts/s (server, and its ratio to offline: target >= 0.8x), p50 / p99
latency, errors (non-200 or broken connections: target 0), the server's peak RSS (VmHWM: it must
not grow with the number of clients; the queue is bounded), the mean inputs per forward pass (from
/metrics), and the largest difference between a served vector and the offline one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import harness
import numpy as np
from encode import load_texts

MODEL_NAME = "bench"


# ---------------------------------------------------------------------------------------- offline
def worker_offline(args) -> None:
    import torch

    from llm2comp import LLM2Comp

    torch.set_num_threads(args.threads)
    texts = json.loads(Path(args.texts_file).read_text())
    model = LLM2Comp.from_pretrained(args.model, backend=args.backend)
    model.encode(texts[:4], batch_size=32, show_progress_bar=False)
    start = time.perf_counter()
    embeddings = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    seconds = time.perf_counter() - start
    np.save(args.out, embeddings)
    harness.emit({"seconds": seconds, "peak_rss_mb": harness.peak_rss_mb()})


def run_offline(args, texts_file: str, out: str) -> dict:
    command = [sys.executable, __file__, "--worker", "offline", "--texts-file", texts_file, "--out", out,
               "--model", args.model, "--threads", str(args.threads), "--backend", args.backend]
    return harness.run_child(command, "offline encode", env=_env(args))


# ---------------------------------------------------------------------------------------- server
def _env(args) -> dict:
    return harness.child_env(OMP_NUM_THREADS=str(args.threads))


def _get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "llm2comp", "serve", "--model", args.model, "--served-model-name", MODEL_NAME,
               "--port", str(port), "--max-batch-tokens", str(args.max_batch_tokens), "--log-level", "warning",
               "--backend", args.backend]
    process = subprocess.Popen(command, env=_env(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{process.stderr.read()[-4000:]}")
        try:
            if _get(port, "/health")[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not become ready in 600 s")


# ---------------------------------------------------------------------------------------- clients
async def _post(reader, writer, body: bytes) -> tuple[int, bytes]:
    writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _client(port: int, work: list, results: dict, latencies: list, errors: list, deadline: float,
                  per_request: int) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        errors.append(repr(error))
        return
    try:
        while work and time.monotonic() < deadline:
            batch = [work.pop() for _ in range(min(per_request, len(work)))]
            body = json.dumps({"model": MODEL_NAME, "input": [text for _, text in batch],
                               "encoding_format": "base64"}).encode()
            started = time.perf_counter()
            try:
                status, answer = await _post(reader, writer, body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
                errors.append(repr(error))
                return
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(f"HTTP {status}: {answer[:200]!r}")
                continue
            for (index, _), item in zip(batch, json.loads(answer)["data"]):
                results[index] = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    finally:
        writer.close()


async def _load(port: int, texts: list[str], clients: int, max_seconds: float, per_request: int) -> dict:
    work = list(enumerate(texts))[::-1]  # popped from the end: input order
    results, latencies, errors = {}, [], []
    deadline = time.monotonic() + max_seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, work, results, latencies, errors, deadline, per_request)
                           for _ in range(clients)))
    return dict(seconds=time.perf_counter() - started, results=results, latencies=latencies, errors=errors)


def _metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M))


def run_server(args, texts: list[str], clients: int) -> dict:
    port = harness.free_port()
    process = start_server(args, port)
    try:
        rss_ready = harness.rss_mb(process.pid)
        asyncio.run(_load(port, texts[:4], 1, 600, 4))  # warm-up, as offline does
        load = asyncio.run(_load(port, texts, clients, args.max_seconds, args.texts_per_request))
        metrics = _get(port, "/metrics")[1]
        peak = harness.peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(60)
    passes = _metric_sum(metrics, "llm2comp_batch_inputs_count")
    inputs = _metric_sum(metrics, "llm2comp_batch_inputs_sum")
    return dict(load, peak_rss_mb=peak, rss_ready_mb=rss_ready, mean_inputs_per_pass=inputs / max(passes, 1))


# ---------------------------------------------------------------------------------------- driver
def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def server_row(result: dict, clients: int, repeat: int, reference: np.ndarray) -> dict:
    served = sorted(result["results"])
    diff = max((float(np.abs(result["results"][i] - reference[i]).max()) for i in served), default=float("nan"))
    return dict(repeat=repeat, clients=clients, texts=len(served), seconds=result["seconds"],
                texts_per_s=len(served) / result["seconds"], p50_s=percentile(result["latencies"], 50),
                p99_s=percentile(result["latencies"], 99), errors=len(result["errors"]),
                error_examples=result["errors"][:3], peak_rss_mb=result["peak_rss_mb"],
                rss_ready_mb=result["rss_ready_mb"], mean_inputs_per_pass=result["mean_inputs_per_pass"],
                max_abs_diff=diff, load_after=os.getloadavg()[0])


def markdown(rows: list[dict], offline: list[dict], n_texts: int) -> str:
    times = ", ".join(f"{run['seconds']:.1f}" for run in offline)
    lines = [f"offline encode of the {n_texts} texts, one run before, between and after the server runs: {times} s "
             f"(peak RSS {max(r['peak_rss_mb'] for r in offline):,.0f} MB)", "",
             harness.markdown_table(
                 ["clients", "run", "texts/s", "vs offline (neighbours)", "p50 latency", "p99 latency", "errors",
                  "server peak RSS", "inputs / forward pass", "max abs diff vs offline"],
                 [[row["clients"], row["repeat"] + 1, f"{row['texts_per_s']:.2f}", f"**{row['ratio']:.2f}x**",
                   f"{row['p50_s']:.2f} s", f"{row['p99_s']:.2f} s", row["errors"], f"{row['peak_rss_mb']:,.0f} MB",
                   f"{row['mean_inputs_per_pass']:.1f}", f"{row['max_abs_diff']:.1e}"]
                  for row in sorted(rows, key=lambda r: (-r["clients"], r["repeat"]))], align="r" * 10)]
    for clients in sorted({row["clients"] for row in rows}, reverse=True):
        ratios = [row["ratio"] for row in rows if row["clients"] == clients]
        lines.append(f"\n- {clients} clients: median ratio to offline **{harness.median(ratios):.2f}x** "
                     f"over {len(ratios)} run(s) (target >= 0.8x)")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--backend", default="torch", help="torch, or onnx / onnx-int8: the --model folder's ONNX "
                        "export (llm2comp export), for the server and the offline runs alike")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--clients", default="200", help="comma-separated client counts, one server run each")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of: offline, then one server run per count")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--max-seconds", type=float, default=1800, help="per server run: no new requests after")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 texts, 20 clients")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", choices=["offline"], help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_offline(args)
        return
    if args.quick:
        args.texts, args.clients = 40, "20"
    client_counts = [int(c) for c in args.clients.split(",")]
    texts = load_texts(args.texts, args.seed)
    rows, offline = [], []

    def save():  # after every run, so an interrupted benchmark still leaves its data
        if args.json:
            Path(args.json).write_text(json.dumps(dict(rows=rows, offline=offline, args=vars(args)), indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        texts_file, reference_file = os.path.join(tmp, "texts.json"), os.path.join(tmp, "offline.npy")
        Path(texts_file).write_text(json.dumps(texts))
        print(f"{len(texts)} texts, model {args.model}, {args.threads} thread(s), clients {client_counts}, "
              f"{args.repeats} repeat(s), load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for repeat in range(args.repeats + 1):
            offline.append(run_offline(args, texts_file, reference_file))
            offline[-1]["texts_per_s"] = len(texts) / offline[-1]["seconds"]
            print(f"  offline: {offline[-1]['seconds']:.1f} s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
            save()
            if repeat == args.repeats:
                break
            reference = np.load(reference_file)
            for clients in client_counts:
                rows.append(server_row(run_server(args, texts, clients), clients, repeat, reference))
                rows[-1]["offline_before"] = len(offline) - 1
                print(f"  {clients} clients: {rows[-1]['texts_per_s']:.2f} texts/s, {rows[-1]['errors']} errors, "
                      f"load {rows[-1]['load_after']:.1f}", file=sys.stderr)
                save()
    for row in rows:  # each server run against the offline runs just before and just after it
        neighbours = offline[row["offline_before"]:row["offline_before"] + 2]
        row["ratio"] = harness.ratio(row["texts_per_s"], statistics.mean(run["texts_per_s"] for run in neighbours))
    save()
    print(markdown(rows, offline, len(texts)))


if __name__ == "__main__":
    main()
