"""`llm2comp serve`: the real server on a loopback port, called with the official openai client and raw HTTP.

Vectors equal offline `encode`; every bad request gets its 4xx (OpenAI error body) and the server
keeps serving; concurrent requests share forward passes (metrics); the event loop answers while
the model runs; a full queue answers 503; shutdown finishes in-flight requests; the CLI serves and
stops on SIGTERM.
"""

import base64
import os
import signal
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
openai = pytest.importorskip("openai")

from llm2comp import LLM2Comp  # noqa: E402
from llm2comp.server.app import create_app  # noqa: E402
from llm2comp.server.settings import ServerSettings  # noqa: E402

from .server_helpers import RunningServer, call, metric  # noqa: E402

NAME = "tiny"
TEXTS = ["how do plants make food?", "Photosynthesis turns light into chemical energy.", "Paris",
         "a child reads a book under a tree in the garden on a sunny afternoon"]
LONG = " ".join(["the long river runs past the old mill and the quiet town"] * 12)
QUERY_PROMPT = "Retrieve passages that answer the question"


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)
    model.config.prompts = {"query": QUERY_PROMPT}
    return model


@pytest.fixture(scope="module")
def server(model):
    settings = ServerSettings(model="unused", served_model_name=NAME, max_inputs_per_request=8,
                              max_request_bytes=4096)
    with RunningServer(create_app(settings, model=model)) as running:
        yield running


def unit(vectors):
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(vectors)), dim=-1).numpy()


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), atol=1e-5, rtol=0)


def client(server, key="unused"):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_openai_client_gets_offline_encode_vectors(server, model):
    with client(server) as api:
        check_client_results(api, model)


def check_client_results(api, model):
    offline = unit(model.encode(TEXTS))
    response = api.embeddings.create(model=NAME, input=TEXTS)  # the client asks for base64 by default
    assert [item.index for item in response.data] == [0, 1, 2, 3] and response.model == NAME
    close([item.embedding for item in response.data], offline)
    tokens = sum(len(ids) for ids in model.tokenizer(TEXTS, add_special_tokens=False)["input_ids"])
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    close(api.embeddings.create(model=NAME, input=TEXTS[0], encoding_format="float").data[0].embedding, offline[0])

    queries = api.embeddings.create(model=NAME, input=TEXTS[:2], extra_body={"input_type": "query"})
    close([item.embedding for item in queries.data], unit(model.encode(TEXTS[:2], instruction=QUERY_PROMPT)))
    own = api.embeddings.create(model=NAME, input=TEXTS[:2], extra_body={"input_type": "query", "instruction": "Find"})
    close([item.embedding for item in own.data], unit(model.encode(TEXTS[:2], instruction="Find")))
    documents = api.embeddings.create(model=NAME, input=TEXTS[:2], extra_body={"input_type": "document"})
    close([item.embedding for item in documents.data], offline[:2])

    short = api.embeddings.create(model=NAME, input=TEXTS, dimensions=16)
    assert len(short.data[0].embedding) == 16
    close([item.embedding for item in short.data], unit(model.encode(TEXTS)[:, :16]))
    assert [m.id for m in api.models.list().data] == [NAME]


def test_raw_http_base64_token_ids_and_truncation(server, model):
    status, _, body = call(server.port, "POST", "/v1/embeddings",
                           {"model": NAME, "input": TEXTS[:2], "encoding_format": "base64", "user": "u1"})
    assert status == 200 and body["object"] == "list" and body["data"][0]["object"] == "embedding"
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in body["data"]]
    close(decoded, unit(model.encode(TEXTS[:2])))

    ids = model.tokenizer(TEXTS[:2], add_special_tokens=False)["input_ids"]
    status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": NAME, "input": ids})
    assert status == 200
    close([item["embedding"] for item in body["data"]], unit(model.encode(TEXTS[:2])))
    status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": NAME, "input": ids[0]})
    assert status == 200 and len(body["data"]) == 1

    before = metric(call(server.port, "GET", "/metrics")[2], "llm2comp_truncated_inputs_total")
    status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": NAME, "input": [LONG]})
    assert status == 200 and body["usage"]["prompt_tokens"] == 64 - 1 - 4  # max_length - BOS - memory
    with pytest.warns(UserWarning, match="truncated"):
        close(body["data"][0]["embedding"], unit(model.encode([LONG]))[0])  # cut exactly as encode cuts
    assert metric(call(server.port, "GET", "/metrics")[2], "llm2comp_truncated_inputs_total") == before + 1

    # long_texts "segments": every token is read, window by window, as encode(long_texts="segments") does
    status, _, body = call(server.port, "POST", "/v1/embeddings",
                           {"model": NAME, "input": [LONG, TEXTS[0]], "long_texts": "segments"})
    total = len(model.tokenizer(LONG, add_special_tokens=False)["input_ids"])
    assert status == 200 and body["usage"]["prompt_tokens"] == total + len(ids[0])
    close([item["embedding"] for item in body["data"]], unit(model.encode([LONG, TEXTS[0]], long_texts="segments")))


BAD_REQUESTS = [
    ({"model": NAME, "input": ""}, 400, "input"),
    ({"model": NAME, "input": ["fine", "   "]}, 400, "input"),
    ({"model": NAME, "input": []}, 400, "input"),
    ({"model": NAME, "input": 3}, 400, "input"),
    ({"model": NAME, "input": ["a", 1]}, 400, "input"),
    ({"model": NAME, "input": [[]]}, 400, "input"),
    ({"model": NAME, "input": [[1, 10**9]]}, 400, "input"),  # outside the vocabulary
    ({"model": NAME, "input": ["x"] * 9}, 400, "input"),  # max 8 inputs per request
    ({"model": NAME}, 400, "input"),
    ({"input": "a"}, 400, "model"),
    ({"model": "gpt-4", "input": "a"}, 404, "model"),
    ({"model": NAME, "input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": NAME, "input": "a", "dimensions": 0}, 400, "dimensions"),
    ({"model": NAME, "input": "a", "dimensions": 65}, 400, "dimensions"),  # the model has 64
    ({"model": NAME, "input": "a", "input_type": "passage"}, 400, "input_type"),
    ({"model": NAME, "input": "a", "input_type": "document", "instruction": "Find"}, 400, "instruction"),
    ({"model": NAME, "input": [[1, 2]], "instruction": "Find"}, 400, "instruction"),
    ({"model": NAME, "input": "a", "temperature": 1}, 400, "temperature"),
    ({"model": NAME, "input": "a", "long_texts": "multivector"}, 400, "long_texts"),
    ({"model": NAME, "input": "x" * 5000}, 413, None),  # over --max-request-bytes 4096
]


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, model):
    for body, status, param in BAD_REQUESTS:
        got, _, answer = call(server.port, "POST", "/v1/embeddings", body)
        assert got == status, (body, answer)
        error = answer["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], answer
        assert error["param"] == param, (body, error)
    got, _, answer = call(server.port, "POST", "/v1/embeddings", raw=b'{"model": "tiny", "input": ')
    assert got == 400 and "not valid JSON" in answer["error"]["message"]
    got, _, answer = call(server.port, "GET", "/v1/embeddings")
    assert got == 405 and answer["error"]["code"] == "method_not_allowed"
    with client(server) as api:
        with pytest.raises(openai.NotFoundError) as caught:
            api.embeddings.create(model="other", input="a")
        assert caught.value.code == "model_not_found" and caught.value.param == "model"
        with pytest.raises(openai.BadRequestError, match="empty"):
            api.embeddings.create(model=NAME, input=[""])
    status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": NAME, "input": TEXTS})
    assert status == 200
    close([item["embedding"] for item in body["data"]], unit(model.encode(TEXTS)))
    text = call(server.port, "GET", "/metrics")[2]
    assert metric(text, "llm2comp_requests_total", endpoint="/v1/embeddings", status="400") >= 17


def test_no_truncate_and_api_key(model, monkeypatch):
    monkeypatch.setenv("TEST_LLM2COMP_KEY", "s3cret-key")
    settings = ServerSettings(model="unused", served_model_name=NAME, truncate=False, api_key_env="TEST_LLM2COMP_KEY")
    with RunningServer(create_app(settings, model=model)) as running:
        with client(running, key="wrong") as api, pytest.raises(openai.AuthenticationError):
            api.embeddings.create(model=NAME, input="a")
        status, headers, body = call(running.port, "POST", "/v1/embeddings", {"model": NAME, "input": "a"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key" and headers["www-authenticate"] == "Bearer"
        assert call(running.port, "GET", "/v1/models")[0] == 401
        assert call(running.port, "GET", "/health")[0] == 200  # probes need no key
        with client(running, key="s3cret-key") as good:
            close(good.embeddings.create(model=NAME, input=TEXTS[0]).data[0].embedding,
                  unit(model.encode(TEXTS[:1]))[0])
            with pytest.raises(openai.APIStatusError) as caught:
                good.embeddings.create(model=NAME, input=["fine", LONG])
        assert caught.value.status_code == 413 and caught.value.body["code"] == "input_too_long"
        assert "input[1]" in caught.value.body["message"]
    monkeypatch.delenv("TEST_LLM2COMP_KEY")
    with pytest.raises(ValueError, match="TEST_LLM2COMP_KEY"):
        create_app(settings, model=model)  # a key variable that is unset stops the start
    with pytest.raises(ValueError, match="cannot exceed"):
        ServerSettings(max_inputs_per_request=10, max_queue_inputs=5)
    with pytest.raises(ValueError, match="exceeds what the model holds"):
        create_app(ServerSettings(max_input_tokens=1000), model=model)


def test_concurrent_requests_share_forward_passes(model):
    settings = ServerSettings(model="unused", served_model_name=NAME, max_wait_ms=300)
    texts = [f"text number {i} about {word}" for i, word in enumerate("rivers cats stocks rain books music".split())]
    with RunningServer(create_app(settings, model=model)) as running:
        with ThreadPoolExecutor(len(texts)) as pool:
            answers = list(pool.map(lambda text: call(running.port, "POST", "/v1/embeddings",
                                                      {"model": NAME, "input": text}), texts))
        assert all(status == 200 for status, _, _ in answers)
        close([body["data"][0]["embedding"] for _, _, body in answers], unit(model.encode(texts)))
        text = call(running.port, "GET", "/metrics")[2]
    passes = metric(text, "llm2comp_forward_passes_total")
    assert metric(text, "llm2comp_inputs_total") == len(texts)
    assert 1 <= passes < len(texts)  # requests were merged
    assert metric(text, "llm2comp_batch_inputs_bucket", le="1") < passes  # some pass held more than one input


def test_a_failing_forward_pass_is_a_500_and_the_server_goes_on(server, model, monkeypatch):
    original, calls = model.forward, []

    def fails_once(batch):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(batch)

    monkeypatch.setattr(model, "forward", fails_once)
    status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": NAME, "input": TEXTS[:2]})
    assert status == 500 and body["error"]["type"] == "server_error"
    status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": NAME, "input": TEXTS[:2]})
    assert status == 200
    close([item["embedding"] for item in body["data"]], unit(model.encode(TEXTS[:2])))


@pytest.fixture
def gated_model(model, monkeypatch):
    """The model, with its forward pass held until `release` is set (to look at the server mid-batch)."""
    entered, release = threading.Event(), threading.Event()
    original = model.forward

    def forward(batch):
        entered.set()
        assert release.wait(30)
        return original(batch)

    monkeypatch.setattr(model, "forward", forward)
    return model, entered, release


def test_loop_answers_while_the_model_runs_full_queue_503_and_graceful_shutdown(gated_model):
    model, entered, release = gated_model
    settings = ServerSettings(model="unused", served_model_name=NAME, max_queue_inputs=8, max_inputs_per_request=8)
    running = RunningServer(create_app(settings, model=model)).__enter__()
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(call, running.port, "POST", "/v1/embeddings", {"model": NAME, "input": TEXTS + TEXTS[:2]})
            assert entered.wait(30)
            started = time.monotonic()
            assert call(running.port, "GET", "/health", timeout=5)[0] == 200  # the event loop is free
            assert metric(call(running.port, "GET", "/metrics", timeout=5)[2], "llm2comp_queue_inputs") == 6
            assert time.monotonic() - started < 5
            status, headers, body = call(running.port, "POST", "/v1/embeddings", {"model": NAME, "input": TEXTS[:3]})
            assert status == 503 and body["error"]["code"] == "server_overloaded" and headers["retry-after"] == "1"
            second = pool.submit(call, running.port, "POST", "/v1/embeddings", {"model": NAME, "input": TEXTS[:2]})
            while metric(call(running.port, "GET", "/metrics")[2], "llm2comp_queue_inputs") < 8:
                time.sleep(0.02)  # the second request is queued behind the first
            running.begin_shutdown()  # as SIGTERM: both in-flight requests must still be answered
            time.sleep(0.3)
            release.set()
            (status1, _, body1), (status2, _, body2) = first.result(30), second.result(30)
    finally:
        release.set()
        running.__exit__(None, None, None)
    assert status1 == status2 == 200
    close([item["embedding"] for item in body1["data"]], unit(model.encode(TEXTS + TEXTS[:2])))
    close([item["embedding"] for item in body2["data"]], unit(model.encode(TEXTS[:2])))
    with pytest.raises(OSError):
        call(running.port, "GET", "/health", timeout=2)  # stopped: the port is closed


def test_health_reports_loading_then_ready_and_load_failures(model):
    ready = threading.Event()

    def slow_loader(settings):
        assert ready.wait(30)
        return model

    settings = ServerSettings(model="unused", served_model_name=NAME)
    with RunningServer(create_app(settings, loader=slow_loader)) as running:
        status, _, body = call(running.port, "GET", "/health")
        assert status == 503 and body == {"status": "loading"}
        status, _, body = call(running.port, "POST", "/v1/embeddings", {"model": NAME, "input": "a"})
        assert status == 503 and body["error"]["code"] == "model_not_ready"
        ready.set()
        deadline = time.monotonic() + 30
        while call(running.port, "GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert call(running.port, "POST", "/v1/embeddings", {"model": NAME, "input": "a"})[0] == 200

    failures = []

    def broken_loader(settings):
        raise FileNotFoundError("no such model folder")

    with RunningServer(create_app(settings, loader=broken_loader, on_fatal=failures.append)) as running:
        deadline = time.monotonic() + 10
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, _, body = call(running.port, "GET", "/health")
        assert status == 503 and body["status"] == "failed" and "no such model folder" in body["error"]
    assert isinstance(failures[0], FileNotFoundError)


def test_a_load_failure_from_bad_input_is_logged_as_one_line_a_bug_with_its_traceback(model, caplog):
    import logging

    from llm2comp.errors import MissingFile

    settings = ServerSettings(model="/nonexistent/model", served_model_name=NAME)
    for error, traceback in ((MissingFile("model folder /nonexistent/model does not exist"), False),
                             (ZeroDivisionError("a bug"), True)):
        failures = []

        def loader(settings, error=error):
            raise error

        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="llm2comp"):
            with RunningServer(create_app(settings, loader=loader, on_fatal=failures.append)):
                deadline = time.monotonic() + 10
                while not failures:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
        [record] = [r for r in caplog.records if "could not load the model" in r.getMessage()]
        assert (record.exc_info is not None) == traceback  # before: a traceback for the user's own typo
        assert traceback or "/nonexistent/model does not exist" in record.getMessage()


@pytest.mark.slow
def test_cli_serves_a_saved_folder_and_stops_cleanly_on_sigterm(model, tmp_path):
    import socket

    folder = tmp_path / "my-model"
    model.save(folder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    # --max-wait-ms holds a lone request in the queue, so one is in flight when SIGTERM comes
    process = subprocess.Popen([sys.executable, "-m", "llm2comp", "serve", "--model", str(folder), "--port", str(port),
                                "--log-level", "info", "--max-wait-ms", "1500", "--graceful-timeout", "0.2"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if call(port, "GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as api:
            response = api.embeddings.create(model="my-model", input=TEXTS[:2], extra_body={"input_type": "query"})
        close([item.embedding for item in response.data], unit(model.encode(TEXTS[:2], instruction=QUERY_PROMPT)))
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call, port, "POST", "/v1/embeddings", {"model": "my-model", "input": "a"})
            time.sleep(0.5)  # queued, waiting for company
            process.send_signal(signal.SIGTERM)
            status, headers, body = pending.result(30)
        log = process.communicate(timeout=60)[0].decode()
        # cut by --graceful-timeout: OpenAI's shape and a retry hint, not uvicorn's plain-text 500
        assert status == 503 and body["error"]["code"] == "server_overloaded" and headers["retry-after"] == "1"
        # a graceful stop is a success for a service manager: status 0, not death by SIGTERM (-15)
        assert process.returncode == 0, log
        assert "Application shutdown complete" in log and "ready (dimension 64" in log
        assert "Traceback" not in log and "CancelledError" not in log, log
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
