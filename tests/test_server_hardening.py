"""`llm2comp serve` under hostile or careless clients (issue 18, part B): each test is one defect
an outside probe found, and fails on the server before the fix.

Bounded tokenization of huge texts, disconnected clients dropped before the model, lone
surrogates, strict JSON types, bad bodies, docs behind the key, model ids with "/", uvicorn's
connection limits, --max-input-tokens in every long_texts mode, shutdown (503 not 500, /health
"stopping", exit status 0, no tracebacks), validation off the event loop, HTTP-worded errors,
and the shared model loader.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from llm2comp import LLM2Comp  # noqa: E402
from llm2comp.server.app import create_app, create_server, uvicorn_config  # noqa: E402
from llm2comp.server.settings import ServerSettings  # noqa: E402

from .server_helpers import RunningServer, call, metric  # noqa: E402

NAME = "tiny"
WORDS = "the long river runs past the old mill and the quiet town "


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)


def settings(**changes) -> ServerSettings:
    return ServerSettings(**{"model": "unused", "served_model_name": NAME, **changes})


@pytest.fixture(scope="module")
def server(model):
    with RunningServer(create_app(settings(), model=model)) as running:
        yield running


def unit(vectors):
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), dim=-1).numpy()


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), atol=1e-5, rtol=0)


def post(port, body=None, **options):
    return call(port, "POST", "/v1/embeddings", body, **options)


def assert_openai_error(answer, status, got, code, param=None):
    assert got == status, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], answer
    assert error["code"] == code and error["param"] == param, answer
    return error["message"]


# ---------------------------------------------------------------- 1. huge texts, bounded tokenizer work
def test_a_huge_text_is_cut_by_characters_before_the_tokenizer_sees_it(model, monkeypatch):
    seen = []
    tokenizer_class = type(model.tokenizer)
    original = tokenizer_class.__call__

    def spy(self, texts, *args, **kwargs):  # every copy of the tokenizer shares the class
        seen.append(max(len(text) for text in ([texts] if isinstance(texts, str) else texts)))
        return original(self, texts, *args, **kwargs)

    huge = WORDS * 40_000  # 2.3 MB of text, far past the 59 tokens kept
    with RunningServer(create_app(settings(max_request_bytes=8 * 1024 * 1024), model=model)) as running:
        monkeypatch.setattr(tokenizer_class, "__call__", spy)
        status, _, body = post(running.port, {"model": NAME, "input": [huge, "Paris"]})
        monkeypatch.undo()
        paris = len(model.tokenizer("Paris", add_special_tokens=False)["input_ids"])
        assert status == 200 and body["usage"]["prompt_tokens"] == 59 + paris
        service = running.app.state.llm2comp.service
        assert seen and max(seen) < 20_000  # not 2.3 MB
        assert max(seen) <= service.char_bound("truncate", 0)
        with pytest.warns(UserWarning, match="truncated"):
            offline = unit(model.encode([huge[:5000], "Paris"]))
        close([item["embedding"] for item in body["data"]], offline)  # cut exactly as encode cuts the text
        assert metric(call(running.port, "GET", "/metrics")[2], "llm2comp_truncated_inputs_total") == 1

        # --no-truncate: a text beyond the bound is refused without being tokenized
        strict = running.app.state.llm2comp.settings
        strict.truncate = False
        seen.clear()
        monkeypatch.setattr(tokenizer_class, "__call__", spy)
        status, _, body = post(running.port, {"model": NAME, "input": ["fine", huge]})
        monkeypatch.undo()
        strict.truncate = True
        assert_openai_error(body, 413, status, "input_too_long", "input")
        assert "input[1]" in body["error"]["message"] and not seen


def test_tokenizer_pool_lets_a_short_request_pass_a_long_one():
    from llm2comp.server.service import TokenizerPool

    busy, release = threading.Event(), threading.Event()

    class Slow:
        def __call__(self, texts, add_special_tokens):
            busy.set()
            assert release.wait(10)
            return {"input_ids": [[1]] * len(texts)}

    class Fast:
        def __call__(self, texts, add_special_tokens):
            return {"input_ids": [[2]] * len(texts)}

    pool = TokenizerPool([Slow(), Fast()])
    with ThreadPoolExecutor(2) as threads:
        long = threads.submit(pool, ["a very long text"])
        assert busy.wait(10)
        started = time.monotonic()
        assert pool(["short"]) == [[2]]  # no global lock: the other copy answers at once
        assert time.monotonic() - started < 1
        release.set()
        assert long.result(10) == [[1]]


class _Echo:
    def __call__(self, texts, add_special_tokens):
        return {"input_ids": [[len(text)] for text in texts]}


def test_tokenizer_pool_makes_a_copy_only_when_every_one_is_busy():
    from llm2comp.server.service import TokenizerPool

    original = _Echo()
    pool = TokenizerPool.of(original, 2)
    assert pool(["abc"]) == [[3]] and pool._made == 1  # one caller at a time: no copy
    held = pool._take()  # a long call holds the original
    with ThreadPoolExecutor(1) as threads:
        assert threads.submit(pool, ["ab"]).result(5) == [[2]]  # a copy answers; nobody waits
    assert held is original and pool._made == 2


# ---------------------------------------------------------------- 2. disconnected clients
@pytest.fixture
def gated_model(model, monkeypatch):
    """The model, its forward pass held until `release` is set; `rows` counts the rows it computed."""
    entered, release, rows = threading.Event(), threading.Event(), []
    original = model.forward

    def forward(batch):
        rows.append(batch.input_ids.shape[0])
        entered.set()
        assert release.wait(30)
        return original(batch)

    monkeypatch.setattr(model, "forward", forward)
    return model, entered, release, rows


def test_a_client_that_hangs_up_is_dropped_before_the_model_and_counted_499(gated_model):
    model, entered, release, rows = gated_model
    running = RunningServer(create_app(settings(), model=model)).__enter__()
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, running.port, {"model": NAME, "input": ["one", "two"]})
            assert entered.wait(30)
            body = json.dumps({"model": NAME, "input": ["three", "four", "five"]}).encode()
            with socket.create_connection(("127.0.0.1", running.port)) as gone:
                gone.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                deadline = time.monotonic() + 10
                while metric(call(running.port, "GET", "/metrics")[2], "llm2comp_queue_inputs") < 5:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)  # the second request is queued behind the first
            deadline = time.monotonic() + 10
            while not metric(call(running.port, "GET", "/metrics")[2], "llm2comp_requests_total",
                             endpoint="/v1/embeddings", status="499"):
                assert time.monotonic() < deadline, "the disconnect was not noticed"
                time.sleep(0.02)
            # its three rows left the queue at once; the two running ones stay
            assert metric(call(running.port, "GET", "/metrics")[2], "llm2comp_queue_inputs") == 2
            release.set()
            status, _, answer = first.result(30)
        assert status == 200 and len(answer["data"]) == 2
        while metric(call(running.port, "GET", "/metrics")[2], "llm2comp_queue_inputs"):
            time.sleep(0.02)
        text = call(running.port, "GET", "/metrics")[2]
        assert sum(rows) == 2  # the three rows of the client that left never reached the model
        assert metric(text, "llm2comp_inputs_total") == 2
        assert metric(text, "llm2comp_requests_total", endpoint="/v1/embeddings", status="200") == 1
    finally:
        release.set()
        running.__exit__(None, None, None)


def test_the_batcher_never_computes_the_rows_of_a_cancelled_request():
    from llm2comp.server.batching import DynamicBatcher

    computed, gate = [], threading.Event()

    def embed(rows):
        computed.append(len(rows))
        assert gate.wait(10)
        return torch.zeros(len(rows), 2)

    async def scenario():
        batcher = DynamicBatcher(embed, row_overhead=1, max_batch_tokens=4, max_queue_inputs=16)
        batcher.start()
        busy = asyncio.ensure_future(batcher.embed([[1, 2]]))  # holds the worker
        while not computed:
            await asyncio.sleep(0.01)
        left = asyncio.ensure_future(batcher.embed([[3], [4], [5]]))
        await asyncio.sleep(0.05)
        left.cancel()  # the client went away while its rows waited
        await asyncio.sleep(0.05)
        gate.set()
        assert (await busy).shape == (1, 2)
        await asyncio.get_running_loop().run_in_executor(None, batcher.stop, 10)
        return batcher.queued_inputs

    assert asyncio.run(scenario()) == 0
    assert computed == [1]


# ---------------------------------------------------------------- 3-5. strict bodies, OpenAI errors
def test_lone_surrogates_are_a_400_naming_the_input(server):
    raw = b'{"model": "tiny", "input": "ab\\ud800cd"}'
    status, _, answer = post(server.port, raw=raw)
    assert "input[0]" in assert_openai_error(answer, 400, status, "invalid_value", "input")
    status, _, answer = post(server.port, raw=b'{"model": "tiny", "input": ["fine", "x\\udfffy"]}')
    assert "input[1]" in assert_openai_error(answer, 400, status, "invalid_value", "input")
    status, _, answer = post(server.port, raw=b'{"model": "tiny", "input": "a", "instruction": "\\ud800"}')
    assert_openai_error(answer, 400, status, "invalid_value", "instruction")
    status, _, answer = post(server.port, raw=b'{"model": "t\\ud800", "input": "a"}')  # echoed, escaped
    assert "\\ud800" in assert_openai_error(answer, 404, status, "model_not_found", "model")
    assert post(server.port, {"model": NAME, "input": "fine"})[0] == 200


@pytest.mark.parametrize("field, value", [
    ("dimensions", True), ("dimensions", "3"), ("dimensions", 3.0),
    ("input", [True, False]), ("input", [1.0, 2.0]), ("input", [[1, True]]), ("input", [[1], "a"]),
    ("input", [None]), ("model", 5), ("user", 1), ("overlap", "2"),
])
def test_json_types_are_strict(server, field, value):
    body = {"model": NAME, "input": "a", field: value}
    status, _, answer = post(server.port, body)
    assert_openai_error(answer, 400, status, "invalid_value", field)


@pytest.mark.parametrize("raw, headers, says", [
    (b'{"model": "tiny", "input": ', {}, "not valid JSON"),
    (b'\xff\xfe{"model": "tiny", "input": "a"}', {}, "not UTF-8"),
    ('{"model": "tiny", "input": "caf\u00e9"}'.encode("latin-1"), {}, "not UTF-8"),
    (gzip.compress(b'{"model": "tiny", "input": "a"}'), {"Content-Encoding": "gzip"}, "Content-Encoding"),
    (b'["model", "tiny"]', {}, "JSON object"),
    (b"", {}, "not valid JSON"),
])
def test_bad_bodies_are_400_invalid_value(server, raw, headers, says):
    status, _, answer = post(server.port, raw=raw, headers=headers)
    assert says in assert_openai_error(answer, 400, status, "invalid_value")


# ---------------------------------------------------------------- 6. docs off by default, behind the key
def test_docs_are_off_by_default_and_behind_the_key_when_on(server, model, monkeypatch):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert call(server.port, "GET", path)[0] == 404, path
    monkeypatch.setenv("TEST_LLM2COMP_DOCS_KEY", "k3y")
    app = create_app(settings(enable_docs=True, api_key_env="TEST_LLM2COMP_DOCS_KEY"), model=model)
    with TestClient(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 401, path
        schema = client.get("/openapi.json", headers={"Authorization": "Bearer k3y"})
        assert schema.status_code == 200
        body = schema.json()["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]
        assert "input" in body["schema"]["properties"]
        assert client.get("/health").status_code == 200  # probes stay open


# ---------------------------------------------------------------- 7. model names
def test_a_model_name_with_a_slash_is_found_and_dot_serves_the_folder_name(model, tmp_path, monkeypatch):
    with TestClient(create_app(settings(served_model_name="org/name"), model=model)) as client:
        assert [card["id"] for card in client.get("/v1/models").json()["data"]] == ["org/name"]
        card = client.get("/v1/models/org/name")
        assert card.status_code == 200 and card.json()["id"] == "org/name"
        assert client.get("/v1/models/org/other").status_code == 404
        assert client.post("/v1/embeddings", json={"model": "org/name", "input": "a"}).status_code == 200
    folder = tmp_path / "my-model"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert ServerSettings(model=".").model_name == "my-model"
    assert ServerSettings(model="./").model_name == "my-model"
    assert ServerSettings(model="org/hub-model").model_name == "hub-model"


# ---------------------------------------------------------------- 8. connection limits
def test_uvicorn_gets_the_connection_limits_and_the_cap_holds(model):
    app = create_app(settings(max_connections=3, keep_alive_timeout=2, max_header_bytes=8192), model=model)
    config = uvicorn_config(app, app.state.llm2comp.settings)
    assert (config.limit_concurrency, config.timeout_keep_alive, config.h11_max_incomplete_event_size) == (3, 2, 8192)
    assert config.http == "h11" and config.timeout_graceful_shutdown == 30.0
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    with RunningServer(app) as running:
        idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(2)]
        try:
            idle[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers begun, never finished
            time.sleep(0.2)
            assert call(running.port, "GET", "/health")[0] == 503  # the third connection is over the cap
        finally:
            for connection in idle:
                connection.close()
        deadline = time.monotonic() + 5
        while call(running.port, "GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as big:
            big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000)  # still unfinished
            assert big.recv(100).startswith(b"HTTP/1.1 4")  # past --max-header-bytes: refused, not held


# ---------------------------------------------------------------- 9. the token limit in every mode
def test_max_input_tokens_holds_for_segments_too(model):
    long = WORDS * 20
    with TestClient(create_app(settings(max_input_tokens=10, truncate=False), model=model)) as client:
        for mode in ("truncate", "segments"):
            answer = client.post("/v1/embeddings", json={"model": NAME, "input": [long], "long_texts": mode})
            assert answer.status_code == 413 and answer.json()["error"]["code"] == "input_too_long", mode
    with TestClient(create_app(settings(max_input_tokens=10), model=model)) as client:
        answer = client.post("/v1/embeddings", json={"model": NAME, "input": [long], "long_texts": "segments"})
        assert answer.status_code == 200 and answer.json()["usage"]["prompt_tokens"] == 10
        ids = model.tokenizer(long, add_special_tokens=False)["input_ids"][:10]
        first_ten = client.post("/v1/embeddings", json={"model": NAME, "input": [ids]}).json()
        close(answer.json()["data"][0]["embedding"], first_ten["data"][0]["embedding"])


# ---------------------------------------------------------------- 10. shutdown
def test_signal_marks_health_stopping_and_new_requests_503(model):
    app = create_app(settings(), model=model)
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "ok"
        create_server(app, uvicorn_config(app, app.state.llm2comp.settings)).handle_exit(signal.SIGTERM, None)
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "stopping"}
        answer = client.post("/v1/embeddings", json={"model": NAME, "input": "a"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "server_overloaded"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage() + (str(record.exc_info[0]) if record.exc_info else ""))


def test_requests_cut_by_the_graceful_timeout_get_an_openai_503(gated_model):
    model, entered, release, _ = gated_model
    records = _Records()
    logging.getLogger("uvicorn.error").addHandler(records)
    running = RunningServer(create_app(settings(), model=model), timeout_graceful_shutdown=0.2).__enter__()
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(post, running.port, {"model": NAME, "input": ["one", "two"]})
            assert entered.wait(30)
            running.begin_shutdown()
            status, headers, answer = pending.result(30)
        release.set()
    finally:
        release.set()
        running.__exit__(None, None, None)
        logging.getLogger("uvicorn.error").removeHandler(records)
    assert_openai_error(answer, 503, status, "server_overloaded")
    assert headers["retry-after"] == "1"
    assert not [line for line in records.lines if "Exception in ASGI" in line or "CancelledError" in line]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_0_without_a_traceback_on_a_signal(sig):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = ("import sys, threading\n"
              "from llm2comp.models import loading\n"
              "loading.load_for_use = lambda *args, **kwargs: threading.Event().wait()  # loads forever\n"
              "from llm2comp.cli.main import main\n"
              f"sys.exit(main(['serve', '--model', 'unused', '--port', '{port}', '--log-level', 'info']))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                status, _, body = call(port, "GET", "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not open its port"
                time.sleep(0.1)
        assert (status, body) == (503, {"status": "loading"})
        process.send_signal(sig)
        log = process.communicate(timeout=30)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "Application shutdown complete" in log


# ---------------------------------------------------------------- 11. heavy validation off the event loop
def test_token_id_checks_run_off_the_event_loop_and_health_answers_meanwhile(model, monkeypatch):
    from llm2comp.server.service import EmbeddingService

    held, release, on_loop = threading.Event(), threading.Event(), []
    original = EmbeddingService._check_ids

    def check(self, row, index):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        held.set()
        release.wait(10)
        return original(self, row, index)

    monkeypatch.setattr(EmbeddingService, "_check_ids", check)
    ids = [list(range(1, 200))] * 8
    with RunningServer(create_app(settings(), model=model)) as running, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, running.port, {"model": NAME, "input": ids}, timeout=30)
        assert held.wait(10)
        started = time.monotonic()
        status = call(running.port, "GET", "/health", timeout=5)[0]  # answered while the check runs
        release.set()
        assert status == 200 and time.monotonic() - started < 2
        assert pending.result(30)[0] == 200
    assert on_loop and not any(on_loop)


def test_parsing_runs_on_a_worker_thread(server, monkeypatch):
    from llm2comp.server import routes

    threads = []
    original = routes.parse_embedding_request

    def parse(*args):
        threads.append(threading.current_thread() is threading.main_thread() or _on_loop())
        return original(*args)

    monkeypatch.setattr(routes, "parse_embedding_request", parse)
    assert post(server.port, {"model": NAME, "input": [[1, 2, 3]] * 4})[0] == 200
    assert threads == [False]


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


# ---------------------------------------------------------------- 12. HTTP errors speak in request fields
def test_overlap_errors_name_the_request_field_not_python(model, monkeypatch):
    long = WORDS * 20
    monkeypatch.setattr(model.config, "long_text_overlap", 100)  # not below the 59-token window
    with TestClient(create_app(settings(), model=model)) as client:
        answer = client.post("/v1/embeddings", json={"model": NAME, "input": [long], "long_texts": "segments"})
        message = assert_openai_error(answer.json(), 400, answer.status_code, "invalid_value", "overlap")
        assert "'overlap'" in message and "encode(" not in message and "long_text_overlap" in message
        answer = client.post("/v1/embeddings", json={"model": NAME, "input": [long], "long_texts": "segments",
                                                     "overlap": 59})
        message = assert_openai_error(answer.json(), 400, answer.status_code, "invalid_value", "overlap")
        assert "encode(" not in message
        answer = client.post("/v1/embeddings", json={"model": NAME, "input": [long], "long_texts": "segments",
                                                     "overlap": 5})
        assert answer.status_code == 200
        close(answer.json()["data"][0]["embedding"], unit(model.encode([long], long_texts="segments", overlap=5))[0])
        answer = client.post("/v1/embeddings", json={"model": NAME, "input": "a", "overlap": 5})
        assert_openai_error(answer.json(), 400, answer.status_code, "invalid_value", "overlap")


# ---------------------------------------------------------------- 13. the shared loader and its flags
def test_serve_loads_through_the_shared_loader_with_its_flags(monkeypatch):
    from llm2comp.cli.main import build_parser
    from llm2comp.cli.serve_cmd import settings_from_args
    from llm2comp.models import loading
    from llm2comp.server.app import load_model

    calls = []
    monkeypatch.setattr(loading, "load_for_use", lambda *args, **kwargs: calls.append((args, kwargs)) or "model")
    args = build_parser().parse_args(["serve", "--model", "some/backbone", "--pooling", "mean", "--trust-remote-code",
                                      "--dtype", "bfloat16", "--device", "cpu", "--max-connections", "7",
                                      "--enable-docs"])
    chosen = settings_from_args(args)
    assert load_model(chosen) == "model"
    assert calls == [(("some/backbone", "mean"), {"dtype": "bfloat16", "device": "cpu", "trust_remote_code": True,
                                                    "backend": "torch"})]
    assert chosen.max_connections == 7 and chosen.enable_docs
    plain = settings_from_args(build_parser().parse_args(["serve"]))
    assert not plain.trust_remote_code and not plain.enable_docs
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--device", "cuda:99"])  # checked as encode checks it
