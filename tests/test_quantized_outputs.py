"""Quantised outputs: `encode(precision=...)`, `llm2comp encode --precision`, the server's `precision`
field, binary search with rescoring (`llm2comp search`, retrieval / reranking evaluation).

The codes are sentence-transformers' own; int8 / uint8 need fixed ranges, so a text's code does not
depend on the texts encoded with it; rescoring recovers what Hamming ranking loses.
"""

import base64

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
from sentence_transformers import quantize_embeddings  # noqa: E402

from llm2comp import LLM2Comp  # noqa: E402
from llm2comp.cli.main import main  # noqa: E402
from llm2comp.errors import InvalidSetting  # noqa: E402
from llm2comp.evaluation.base import Embedder  # noqa: E402
from llm2comp.evaluation.reranking import RerankingTask, RerankItem  # noqa: E402
from llm2comp.evaluation.retrieval import RetrievalTask  # noqa: E402
from llm2comp.evaluation.settings import EvalSettings  # noqa: E402
from llm2comp.models.quantization import PRECISIONS, bytes_per_vector, rank_binary, sign_vectors  # noqa: E402

TEXTS = ["how do plants make food?", "Photosynthesis turns light into chemical energy.", "Paris",
         "a child reads a book under a tree in the garden on a sunny afternoon"]
CALIBRATION = ["the stock market fell sharply", "a recipe for bread", "rivers run to the sea", "music at night",
               "the cat sleeps on the warm roof", "trains leave the station at noon"]
DIM = 64


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)


@pytest.fixture(scope="module")
def calibration(model):
    return model.encode(CALIBRATION, normalize_embeddings=True)


# ---------------------------------------------------------------------------------------------- encode
def test_every_precision_has_its_dtype_and_shape_and_equals_sentence_transformers(model, calibration):
    floats = model.encode(TEXTS, normalize_embeddings=True)
    expected = {"float32": (np.float32, DIM), "int8": (np.int8, DIM), "uint8": (np.uint8, DIM),
                "binary": (np.int8, DIM // 8), "ubinary": (np.uint8, DIM // 8)}
    for precision in PRECISIONS:
        extra = {"calibration_embeddings": calibration} if precision in ("int8", "uint8") else {}
        codes = model.encode(TEXTS, normalize_embeddings=True, precision=precision, **extra)
        dtype, width = expected[precision]
        assert codes.dtype == dtype and codes.shape == (len(TEXTS), width), precision
        assert bytes_per_vector(precision, DIM) == width * np.dtype(dtype).itemsize
        np.testing.assert_array_equal(codes, quantize_embeddings(floats, precision, **extra))
        single = model.encode(TEXTS[0], normalize_embeddings=True, precision=precision, **extra)
        assert single.shape == (width,) and single.dtype == dtype
        tensor = model.encode(TEXTS, normalize_embeddings=True, precision=precision, convert_to_tensor=True, **extra)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == getattr(torch, np.dtype(dtype).name)
    # normalize_embeddings comes first: the codes are those of the unit vectors, not of the raw ones
    raw = model.encode(TEXTS)
    codes = model.encode(TEXTS, normalize_embeddings=True, precision="int8", calibration_embeddings=calibration)
    assert not np.array_equal(codes, quantize_embeddings(raw, "int8", calibration_embeddings=calibration))
    ranges = np.stack([calibration.min(0), calibration.max(0)])
    np.testing.assert_array_equal(model.encode(TEXTS, normalize_embeddings=True, precision="uint8", ranges=ranges),
                                  quantize_embeddings(floats, "uint8", ranges=ranges))
    # the packed bits are the signs, in np.packbits order, minus 128 for binary
    bits = model.encode(TEXTS, precision="ubinary")
    np.testing.assert_array_equal(np.unpackbits(bits, axis=1), (raw > 0).astype(np.uint8))
    np.testing.assert_array_equal(model.encode(TEXTS, precision="binary"), (bits.astype(np.int16) - 128).astype(np.int8))


def test_a_texts_code_does_not_depend_on_the_texts_encoded_with_it(model, calibration):
    lengths = {text: len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
               for text in ("the red car", "the big dog", "a cold storm")}
    assert len(set(lengths.values())) == 1  # same shapes: the float vector of "Paris" is bit-identical below
    first = ["Paris", "the red car"]
    second = ["Paris", "a cold storm"]
    floats_a, floats_b = model.encode(first), model.encode(second)
    np.testing.assert_array_equal(floats_a[0], floats_b[0])
    # calibrating on the call (sentence-transformers' default, refused here) gives "Paris" two codes
    assert not np.array_equal(quantize_embeddings(floats_a, "int8")[0], quantize_embeddings(floats_b, "int8")[0])
    for precision in ("int8", "uint8", "binary"):
        extra = {"calibration_embeddings": calibration} if precision.endswith("int8") else {}
        code_a = model.encode(first, normalize_embeddings=True, precision=precision, **extra)[0]
        code_b = model.encode(second, normalize_embeddings=True, precision=precision, **extra)[0]
        alone = model.encode("Paris", normalize_embeddings=True, precision=precision, **extra)
        np.testing.assert_array_equal(code_a, code_b)
        assert code_a.dtype == alone.dtype and code_a.shape == alone.shape


def test_wrong_precision_or_calibration_is_refused_by_name(model, calibration):
    with pytest.raises(InvalidSetting, match="precision must be one of float32, int8, uint8, binary, ubinary"):
        model.encode(TEXTS, precision="int4")
    with pytest.raises(InvalidSetting, match="needs ranges .* or calibration_embeddings"):
        model.encode(TEXTS, precision="int8")  # no ranges: would calibrate on the call
    with pytest.raises(InvalidSetting, match="both were given"):
        model.encode(TEXTS, precision="int8", calibration_embeddings=calibration, ranges=calibration[:2])
    with pytest.raises(InvalidSetting, match="ranges applies to precision int8 / uint8 only"):
        model.encode(TEXTS, precision="binary", ranges=calibration[:2])
    with pytest.raises(InvalidSetting, match="width 64"):
        model.encode(TEXTS, precision="int8", calibration_embeddings=calibration[:, :10])
    with pytest.raises(InvalidSetting, match="minimum greater than its maximum"):
        model.encode(TEXTS, precision="int8", ranges=np.stack([np.ones(DIM), np.zeros(DIM)]))
    with pytest.raises(InvalidSetting, match="at least 2 embeddings"):
        model.encode(TEXTS, precision="uint8", calibration_embeddings=calibration[:1])


def test_multivector_windows_are_quantised_one_by_one(model, calibration):
    long = [" ".join(["the long river runs past the old mill and the quiet town"] * 10), "Paris"]
    windows = model.encode(long, long_texts="multivector", normalize_embeddings=True)
    assert len(windows[0]) > 1
    for precision in ("binary", "int8"):
        extra = {"calibration_embeddings": calibration} if precision == "int8" else {}
        codes = model.encode(long, long_texts="multivector", normalize_embeddings=True, precision=precision, **extra)
        assert isinstance(codes, list) and [len(part) for part in codes] == [len(part) for part in windows]
        for part, floats in zip(codes, windows):
            np.testing.assert_array_equal(part, quantize_embeddings(floats, precision, **extra))
    query = model.encode_query(["where is the mill"], instruction="Find", precision="binary")
    assert query.dtype == np.int8 and query.shape == (1, DIM // 8)
    assert model.encode_document(["the mill"], precision="ubinary").dtype == np.uint8


# ---------------------------------------------------------------------------------------------- CLI encode
def test_cli_encode_writes_each_dtype(model, calibration, tmp_path, capsys):
    folder = tmp_path / "model"
    model.save(folder)
    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:2]) + "\n")
    base = ["encode", "--model", str(folder), "--input", str(tmp_path / "in.txt")]
    for precision, dtype, width in (("binary", np.int8, 8), ("ubinary", np.uint8, 8)):
        assert main(base + ["--output", str(tmp_path / f"{precision}.npy"), "--precision", precision]) == 0
        got = np.load(tmp_path / f"{precision}.npy")
        assert got.dtype == dtype and got.shape == (2, width)
        np.testing.assert_array_equal(got, model.encode(TEXTS[:2], precision=precision))
    np.save(tmp_path / "calibration.npy", calibration)
    assert main(base + ["--output", str(tmp_path / "int8.npy"), "--precision", "int8", "--normalize",
                        "--calibration", str(tmp_path / "calibration.npy")]) == 0
    got = np.load(tmp_path / "int8.npy")
    assert got.dtype == np.int8 and got.shape == (2, DIM)
    np.testing.assert_array_equal(got, quantize_embeddings(model.encode(TEXTS[:2], normalize_embeddings=True),
                                                           "int8", calibration_embeddings=calibration))
    assert "2 x 64 int8 (int8) embeddings" in capsys.readouterr().out
    assert main(base + ["--output", str(tmp_path / "no.npy"), "--precision", "uint8"]) == 2
    assert "--precision uint8 needs --calibration" in capsys.readouterr().err
    assert main(base + ["--output", str(tmp_path / "no.npy"), "--calibration", str(tmp_path / "calibration.npy")]) == 2
    assert "--calibration applies to --precision int8 or uint8 only" in capsys.readouterr().err
    np.save(tmp_path / "codes.npy", got)
    assert main(base + ["--output", str(tmp_path / "no.npy"), "--precision", "int8",
                        "--calibration", str(tmp_path / "codes.npy")]) == 2
    assert "expected float embeddings" in capsys.readouterr().err
    assert not (tmp_path / "no.npy").exists()
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "(texts, ceil(d/8))" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


# ---------------------------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def server(model):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from llm2comp.server.app import create_app
    from llm2comp.server.settings import ServerSettings

    from .server_helpers import RunningServer

    settings = ServerSettings(model="unused", served_model_name="tiny", max_inputs_per_request=8)
    with RunningServer(create_app(settings, model=model)) as running:
        yield running


def test_server_answers_binary_codes_as_numbers_and_base64(server, model):
    from .server_helpers import call

    unit = model.encode(TEXTS, normalize_embeddings=True)
    for precision, dtype in (("binary", np.int8), ("ubinary", np.uint8)):
        status, _, body = call(server.port, "POST", "/v1/embeddings",
                               {"model": "tiny", "input": TEXTS, "precision": precision})
        assert status == 200, body
        values = [item["embedding"] for item in body["data"]]
        assert all(isinstance(value, int) for row in values for value in row)
        np.testing.assert_array_equal(np.array(values), quantize_embeddings(unit, precision))
        status, _, body = call(server.port, "POST", "/v1/embeddings", {"model": "tiny", "input": TEXTS,
                                                                       "precision": precision,
                                                                       "encoding_format": "base64"})
        decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype=dtype) for item in body["data"]]
        assert status == 200 and all(row.shape == (DIM // 8,) for row in decoded)
        np.testing.assert_array_equal(np.stack(decoded), quantize_embeddings(unit, precision))
    status, _, body = call(server.port, "POST", "/v1/embeddings",
                           {"model": "tiny", "input": TEXTS, "precision": "ubinary", "dimensions": 16})
    expected = np.packbits(model.encode(TEXTS)[:, :16] > 0, axis=1)  # the first 16 dimensions' bits
    assert status == 200 and np.array_equal(np.array([item["embedding"] for item in body["data"]]), expected)


def test_server_default_is_float32_unchanged_and_bad_precision_is_a_400(server):
    from .server_helpers import call

    plain = call(server.port, "POST", "/v1/embeddings", {"model": "tiny", "input": TEXTS[:2]})
    explicit = call(server.port, "POST", "/v1/embeddings", {"model": "tiny", "input": TEXTS[:2], "precision": "float32"})
    assert plain[0] == explicit[0] == 200 and plain[2] == explicit[2]
    assert all(isinstance(value, float) for value in plain[2]["data"][0]["embedding"])
    for bad in ("int8", "uint8", "float16", True, 8):  # int8 / uint8 would need calibration ranges
        status, _, answer = call(server.port, "POST", "/v1/embeddings", {"model": "tiny", "input": "a", "precision": bad})
        assert status == 400, (bad, answer)
        error = answer["error"]
        assert error["param"] == "precision" and error["code"] == "invalid_value" and "binary" in error["message"]
        assert set(error) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------------------------------------- rescoring
# a query dominated by dimension 0: document 0 agrees with it there only (Hamming 15 of 16: last by
# Hamming, first by the float query); 1, 2, 3 disagree there, and on fewer of the rest (Hamming 1, 8, 12)
QUERY = np.array([[10.0] + [0.1] * 15], dtype=np.float32)
DOCS = np.array([[1] + [-1] * 15, [-1] + [1] * 15, [-1] * 8 + [1] * 8, [-1] * 12 + [1] * 4], dtype=np.float32)


def test_rescoring_recovers_what_hamming_ranking_loses():
    codes = quantize_embeddings(DOCS, "binary")
    np.testing.assert_array_equal(sign_vectors(codes, 16), DOCS)
    plain, plain_scores = rank_binary(QUERY, codes, top_k=1)
    assert plain.tolist() == [[1]] and plain_scores[0, 0] == pytest.approx(1 - 2 * 1 / 16)
    assert rank_binary(QUERY, codes, top_k=1, rescore_multiplier=2)[0].tolist() == [[1]]  # 0 is not a candidate
    rescored, scores = rank_binary(QUERY, codes, top_k=4, rescore_multiplier=1)
    floats = (QUERY / np.linalg.norm(QUERY)) @ (DOCS / 4).T  # cosine with the +-1 vectors (norm 4)
    assert rescored.tolist() == [np.argsort(-floats[0]).tolist()] == [[0, 1, 2, 3]]
    assert rank_binary(QUERY, codes, top_k=4)[0].tolist() == [[1, 2, 3, 0]]
    np.testing.assert_allclose(scores[0], np.sort(floats[0])[::-1], atol=1e-6)
    # the ranking equals sentence-transformers' rescoring (float query . bits unpacked to 0 / 1)
    zero_one = QUERY @ np.unpackbits(quantize_embeddings(DOCS, "ubinary"), axis=1).T
    assert rescored.tolist() == [np.argsort(-zero_one[0]).tolist()]
    assert rank_binary(QUERY, codes, top_k=1, rescore_multiplier=4)[0].tolist() == [[0]]
    with pytest.raises(InvalidSetting, match="rescore_multiplier"):
        rank_binary(QUERY, codes, top_k=1, rescore_multiplier=0)


class Lookup:
    """A sentence-transformers-like encoder reading fixed vectors by text."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def encode(self, texts):
        return np.stack([self.vectors[text] for text in texts])


def lookup_embedder(**settings):
    vectors = {"q": QUERY[0], **{f"d{i}": DOCS[i] for i in range(len(DOCS))}}
    return Embedder(Lookup(vectors), show_progress_bar=False, **settings)


def test_retrieval_and_reranking_evaluate_quantised_and_rescored():
    corpus = [f"d{i}" for i in range(len(DOCS))]
    task = RetrievalTask(name="t", queries=["q"], corpus=corpus, relevance=[{0: 1.0}])
    exact = task.evaluate(lookup_embedder())
    binary = task.evaluate(lookup_embedder(precision="binary"))
    rescored = task.evaluate(lookup_embedder(precision="binary", rescore_multiplier=1))  # 10 x 1 covers all 4
    assert exact["ndcg_at_1"] == rescored["ndcg_at_1"] == 1.0 and binary["ndcg_at_1"] == 0.0
    assert binary["ndcg_at_10"] < rescored["ndcg_at_10"] == exact["ndcg_at_10"]
    assert task.evaluate(lookup_embedder(precision="int8"))["ndcg_at_1"] == 1.0
    rerank = RerankingTask(name="r", items=[RerankItem("q", ["d0"], ["d1", "d2", "d3"])])
    assert rerank.evaluate(lookup_embedder(precision="binary"))["map"] == pytest.approx(1 / 4)  # d0 ranked last
    assert rerank.evaluate(lookup_embedder(precision="binary", rescore_multiplier=1))["map"] == 1.0
    assert rerank.evaluate(lookup_embedder(precision="int8"))["map"] == 1.0


def test_eval_settings_take_precision_into_the_cache_key():
    default = EvalSettings()
    assert "precision" not in default.key() and "rescore_multiplier" not in default.key()  # old keys still match
    binary = EvalSettings(precision="binary", rescore_multiplier=4)
    assert binary.key()["precision"] == "binary" and binary.key()["rescore_multiplier"] == 4
    assert binary.key() != EvalSettings(precision="binary").key() != default.key()
    with pytest.raises(InvalidSetting, match="precision must be one of float32, int8, binary"):
        EvalSettings(precision="ubinary")
    with pytest.raises(InvalidSetting, match="applies to precision 'binary' only"):
        EvalSettings(precision="int8", rescore_multiplier=2)
    with pytest.raises(InvalidSetting, match="whole number >= 1"):
        EvalSettings(precision="binary", rescore_multiplier=0)
    with pytest.raises(InvalidSetting, match="multivector"):
        EvalSettings(precision="binary", long_texts="multivector")


def test_cli_search_binary_with_rescoring(model, capsys):
    from llm2comp.cli.search_cmd import EXAMPLE_DOCUMENTS, semantic_search

    queries = ["Which landmark is in the French capital?"]
    floats = model.encode_query(queries, instruction=None)
    codes = model.encode_document(EXAMPLE_DOCUMENTS, precision="binary")
    signs = sign_vectors(codes, DIM)
    cosines = (floats / np.linalg.norm(floats)) @ signs.T / np.sqrt(DIM)
    hamming = (np.unpackbits(quantize_embeddings(floats, "ubinary"), axis=1)
               != np.unpackbits(codes.view(np.uint8) ^ 0x80, axis=1)).sum(1)
    every = semantic_search(model, queries, EXAMPLE_DOCUMENTS, None, top=2, precision="binary", rescore_multiplier=3)
    best = np.argsort(-cosines[0], kind="stable")[:2]
    assert [document for _, document in every[0]] == [EXAMPLE_DOCUMENTS[i] for i in best]
    assert [score for score, _ in every[0]] == pytest.approx(cosines[0, best].tolist(), abs=1e-6)
    plain = semantic_search(model, queries, EXAMPLE_DOCUMENTS, None, top=2, precision="binary")
    nearest = np.argsort(hamming, kind="stable")[:2]
    assert [document for _, document in plain[0]] == [EXAMPLE_DOCUMENTS[i] for i in nearest]
    assert [score for score, _ in plain[0]] == pytest.approx((1 - 2 * hamming[nearest] / DIM).tolist())
    assert main(["search", "--model", "smollm2-135m", "--rescore-multiplier", "2"]) == 2
    assert "--rescore-multiplier applies to --precision binary only" in capsys.readouterr().err
