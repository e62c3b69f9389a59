"""The sentence-transformers door: saved folders load in `SentenceTransformer` and give `LLM2Comp.encode`'s
vectors for every tiny architecture; prompts are instructions on queries only; save/load round trips;
mteb evaluates an ST-loaded model; folders of format 1 still load and can be upgraded."""

import json
import warnings

import numpy as np
import pytest

sentence_transformers = pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402

from llm2comp import LLM2Comp, to_sentence_transformer  # noqa: E402
from llm2comp.cli.main import main  # noqa: E402
from llm2comp.models.config import FORMAT_VERSION  # noqa: E402
from llm2comp.models.st_files import MODULE_CONFIG_NAME, MODULES_NAME, ST_CONFIG_NAME, upgrade_folder  # noqa: E402

from .conftest import TINY_ARCHES, randomize_lora  # noqa: E402

LONG = " ".join(["the long river runs past the old mill and the quiet town"] * 12)  # > max_length: truncated
TEXTS = ["how do plants make food?", "Photosynthesis turns light into chemical energy.", "Paris", LONG,
         "a child reads a book under a tree in the garden"]
INSTRUCTION = "Retrieve passages that answer the question"


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def saved_folders(tiny_model_dirs, tmp_path_factory):
    """One trained-like folder per architecture: memory tokens and a LoRA adapter with non-zero weights."""
    root = tmp_path_factory.mktemp("st")
    folders = {}
    for arch in TINY_ARCHES:
        model = LLM2Comp.from_pretrained(tiny_model_dirs[arch], num_memory_tokens=3, max_length=48)
        model.add_lora()
        randomize_lora(model.model)
        folders[arch] = root / arch
        model.save(folders[arch])
    return folders


def quietly(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long text's truncation warning
        return call(*args, **kwargs)


@pytest.mark.parametrize("arch", TINY_ARCHES)
def test_sentence_transformer_equals_llm2comp_encode(saved_folders, arch):
    folder = saved_folders[arch]
    st = SentenceTransformer(str(folder), trust_remote_code=True)
    model = LLM2Comp.from_pretrained(folder)
    assert st.get_embedding_dimension() == model.hidden_size and st.max_seq_length == 48
    assert st.similarity_fn_name == "cosine"
    plain = quietly(model.encode, TEXTS)
    close(quietly(st.encode, TEXTS, batch_size=2), plain)  # other batching than encode's: same vectors
    query = quietly(model.encode_query, TEXTS, instruction=INSTRUCTION)
    close(quietly(st.encode_query, TEXTS, prompt=INSTRUCTION), query)
    assert np.abs(query - plain).max() > 1e-3  # the instruction is really applied
    close(quietly(st.encode_document, TEXTS), quietly(model.encode_document, TEXTS))
    close(st.encode(TEXTS[0]), model.encode(TEXTS[0]))  # a single str gives one vector


def test_prompts_are_instructions_on_queries_only(saved_folders):
    folder = saved_folders["llama"]
    model = LLM2Comp.from_pretrained(folder)
    st = to_sentence_transformer(model, prompts={"query": INSTRUCTION})
    expected = model.encode_query(TEXTS[:3], instruction=INSTRUCTION)
    close(st.encode_query(TEXTS[:3]), expected)  # the saved "query" prompt by default
    close(st.encode(TEXTS[:3], prompt_name="query"), expected)
    close(st.encode_document(TEXTS[:3]), model.encode(TEXTS[:3]))  # documents: never an instruction
    with pytest.raises(ValueError, match="documents take no instruction"):
        st.encode_document(TEXTS[:3], prompt="Find")
    with pytest.raises(ValueError, match="documents take no instruction"):
        to_sentence_transformer(model, prompts={"document": "passage: "})


def test_long_texts_follow_the_model_setting(saved_folders):
    model = LLM2Comp.from_pretrained(saved_folders["llama"], long_texts="segments", long_text_overlap=8)
    st = to_sentence_transformer(model)
    segments = model.encode([LONG, TEXTS[0]])  # the config's mode: every token read, window by window
    close(st.encode([LONG, TEXTS[0]], batch_size=2), segments)
    assert np.abs(segments[0] - quietly(model.encode, [LONG], long_texts="truncate")[0]).max() > 1e-4
    model.set_long_texts("multivector")  # one vector per input through sentence-transformers: the windows' mean
    close(st.encode([LONG, TEXTS[0]]), segments)


def test_round_trip_through_sentence_transformers(saved_folders, tmp_path):
    model = LLM2Comp.from_pretrained(saved_folders["qwen2"])
    st = to_sentence_transformer(model, prompts={"query": INSTRUCTION})
    target = tmp_path / "st"
    target.mkdir()
    (target / "NOTES.txt").write_text("kept")  # ST saves into a folder: what else is there stays
    st.save(str(target))
    assert (target / "NOTES.txt").read_text() == "kept"
    assert model.config.prompts == {}  # saving did not change the live model
    modules = json.loads((target / MODULES_NAME).read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type":
                        "llm2comp.sentence_transformers_module.LLM2CompModule"}]
    st_config = json.loads((target / ST_CONFIG_NAME).read_text())
    assert st_config["prompts"]["query"] == INSTRUCTION and "llm2comp" in st_config["requirements"]
    assert json.loads((target / MODULE_CONFIG_NAME).read_text()) == {"dtype": "float32"}

    reloaded = SentenceTransformer(str(target), trust_remote_code=True)
    assert reloaded.prompts["query"] == INSTRUCTION
    expected = model.encode_query(TEXTS[:3], instruction=INSTRUCTION)
    close(reloaded.encode_query(TEXTS[:3]), expected)
    again = LLM2Comp.from_pretrained(target)  # the same folder is an llm2comp folder
    assert again.config.prompts == {"query": INSTRUCTION}
    close(again.encode_query(TEXTS[:3]), expected)  # encode_query applies the saved prompt too
    close(again.encode(TEXTS[:3]), model.encode(TEXTS[:3]))


def test_loading_needs_trust_and_names_llm2comp_as_a_requirement(saved_folders, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(saved_folders["llama"]))
    folder = tmp_path / "needs_newer"
    shutil.copytree(saved_folders["llama"], folder)
    config = json.loads((folder / ST_CONFIG_NAME).read_text())
    config["requirements"]["llm2comp"]["specifier"] = ">=99"
    (folder / ST_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ImportError, match=r'pip install -U "llm2comp>=99"'):
        SentenceTransformer(str(folder), trust_remote_code=True)


def test_format_1_folder_loads_and_upgrades(saved_folders, tmp_path, capsys):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(saved_folders["gpt2"], folder)
    for name in (MODULES_NAME, ST_CONFIG_NAME, MODULE_CONFIG_NAME):
        (folder / name).unlink()
    config = json.loads((folder / "llm2comp_config.json").read_text())
    del config["prompts"]
    config["format_version"] = 1
    (folder / "llm2comp_config.json").write_text(json.dumps(config))

    expected = LLM2Comp.from_pretrained(saved_folders["gpt2"]).encode(TEXTS[:3])
    close(LLM2Comp.from_pretrained(folder).encode(TEXTS[:3]), expected)  # still loads in llm2comp as it is
    close(to_sentence_transformer(folder).encode(TEXTS[:3]), expected)  # and through the Python door

    assert main(["upgrade", "--model", str(folder)]) == 0
    assert f"upgraded to format {FORMAT_VERSION}" in capsys.readouterr().out
    assert json.loads((folder / "llm2comp_config.json").read_text())["format_version"] == FORMAT_VERSION
    close(SentenceTransformer(str(folder), trust_remote_code=True).encode(TEXTS[:3]), expected)
    assert upgrade_folder(folder) is False  # idempotent
    assert main(["upgrade", "--model", str(tmp_path)]) == 2  # not a model folder: a clear error
    assert "not an LLM2Comp model folder" in capsys.readouterr().err


def test_mteb_evaluates_a_sentence_transformers_loaded_model(saved_folders):
    mteb = pytest.importorskip("mteb")
    from llm2comp.evaluation.retrieval import retrieval_metrics

    from .test_evaluation_mteb import DOCS, QUERIES, LocalRetrieval

    folder = saved_folders["llama"]
    st = SentenceTransformer(str(folder), trust_remote_code=True, prompts={"query": "Find the passage"})
    results = mteb.evaluate(st, LocalRetrieval(), cache=None, show_progress_bar=False)
    score = results.task_results[0].get_score()
    model = LLM2Comp.from_pretrained(folder)
    ours = retrieval_metrics(model.encode_query(list(QUERIES.values()), instruction="Find the passage"),
                             model.encode_document(list(DOCS.values())), [{0: 1.0}, {1: 1.0}])
    assert score == pytest.approx(ours["ndcg_at_10"], abs=1e-4)
