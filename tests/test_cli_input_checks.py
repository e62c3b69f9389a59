"""`encode` / `search` / `eval`: every argument and location is checked before the work, and input files
of every kind (pipes, stdin, fake gzip, NaN scores) give named errors (issue 18 part D)."""

from __future__ import annotations

import io
import json
import os
import sys

import numpy as np
import pytest

from llm2comp import LLM2Comp
from llm2comp.cli.main import main
from llm2comp.errors import UnknownName


@pytest.fixture(scope="module")
def saved(tiny_llama_dir, tmp_path_factory):
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)
    folder = tmp_path_factory.mktemp("probe") / "model"
    model.save(folder)
    return model, folder


@pytest.fixture
def sts_suite(tmp_path):
    """A one-task suite (5 STS pairs): a fast `eval` run."""
    rows = "\n".join(f"text number {i}\tanother text {i * 7 % 5}\t{i}" for i in range(5))
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\tscore\n" + rows + "\n")
    (tmp_path / "suite.yaml").write_text("name: tiny\ntasks:\n  - type: sts\n    name: TinySTS\n    path: pairs.tsv\n")
    return tmp_path / "suite.yaml"


def encode(folder, tmp_path, *extra, output="e.npy"):
    return main(["encode", "--model", str(folder), "--output", str(tmp_path / output), *extra])


# ------------------------------------------------------------------------------------------------ eval --compare
def test_eval_compare_that_does_not_exist_is_refused_before_the_work(sts_suite, tiny_llama_dir, tmp_path, capsys,
                                                                      no_model_load):
    out = tmp_path / "out"
    args = ["eval", "--model", str(tiny_llama_dir), "--suite", str(sts_suite), "--output", str(out)]
    assert main([*args, "--compare", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "compare /nonexistent: not a saved results.json, a folder holding one, or a model" in err
    assert "model folder /nonexistent does not exist" in err
    assert main([*args, "--compare", str(tmp_path / "old" / "results.json")]) == 2
    assert "no saved results at" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*args, "--compare", str(tmp_path / "empty")]) == 2
    assert "empty has no config.json" in capsys.readouterr().err
    assert main([*args, "--compare-pooling", "mean"]) == 2
    assert "--compare-pooling applies only with --compare" in capsys.readouterr().err
    assert not out.exists()


def test_eval_keeps_the_main_results_when_the_compared_model_fails_to_load(sts_suite, tiny_llama_dir, tmp_path,
                                                                            capsys):
    broken = tmp_path / "broken"  # passes the early check (config.json + a weights file), fails to load
    broken.mkdir()
    (broken / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "out"
    try:
        code = main(["eval", "--model", str(tiny_llama_dir), "--pooling", "mean", "--suite", str(sts_suite),
                     "--output", str(out), "--compare", str(broken), "--no-diagnostics"])
    except Exception:  # whatever the loader raises for broken weights; the point is what stays on disk
        code = None
    assert code != 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"][0]["task_name"] == "TinySTS" and "comparison" not in saved
    assert "the comparison failed" in capsys.readouterr().out


def test_eval_compare_with_a_model_matches_two_separate_runs(sts_suite, tiny_llama_dir, tmp_path, capsys):
    base = ["eval", "--model", str(tiny_llama_dir), "--suite", str(sts_suite), "--no-diagnostics"]
    assert main([*base, "--pooling", "mean", "--output", str(tmp_path / "ab"), "--compare", str(tiny_llama_dir),
                 "--compare-pooling", "last"]) == 0
    printed = capsys.readouterr().out
    assert "now evaluating" in printed and f"compared with {tiny_llama_dir} (last)" in printed
    assert main([*base, "--pooling", "mean", "--output", str(tmp_path / "a")]) == 0
    assert main([*base, "--pooling", "last", "--output", str(tmp_path / "b")]) == 0
    compared, a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("ab", "a", "b"))
    row = compared["comparison"]["rows"][0]
    assert (row["a"], row["b"]) == (a["tasks"][0]["main_score"], b["tasks"][0]["main_score"]) and row["a"] != row["b"]
    assert compared["compared_with"]["model"]["pooling"] == "last" and compared["settings"] == a["settings"]
    assert "## Comparison:" in (tmp_path / "ab" / "report.md").read_text()


def test_eval_compare_saved_results_refuses_compare_pooling(sts_suite, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "first"
    assert main(["eval", "--model", str(tiny_llama_dir), "--pooling", "mean", "--suite", str(sts_suite),
                 "--output", str(out), "--no-diagnostics"]) == 0
    assert main(["eval", "--model", str(tiny_llama_dir), "--pooling", "last", "--suite", str(sts_suite),
                 "--compare", str(out), "--compare-pooling", "mean"]) == 2
    assert "holds saved results" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ eval --instructions
def test_eval_instructions_for_unknown_tasks_are_refused(sts_suite, tiny_llama_dir, tmp_path, capsys, no_model_load):
    from llm2comp.evaluation import EvalSettings, evaluate

    (tmp_path / "instructions.yaml").write_text("TinySTS: Retrieve similar text\nTinySTSS: typo\nOther: x\n")
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", str(sts_suite), "--instructions",
                 str(tmp_path / "instructions.yaml")]) == 2
    err = capsys.readouterr().err
    assert "instructions name task(s) not in the tiny suite: ['Other', 'TinySTSS']; its tasks are ['TinySTS']" in err
    with pytest.raises(UnknownName, match=r"not in the offline suite: \['Nope'\]; its tasks are \['LeeDocSim'"):
        evaluate(str(tiny_llama_dir), "offline", EvalSettings(instructions={"Nope": ""}, max_items=4))
    (tmp_path / "empty.yaml").write_text("")
    assert main(["eval", "--model", str(tiny_llama_dir), "--suite", str(sts_suite), "--instructions",
                 str(tmp_path / "empty.yaml")]) == 2
    assert "empty.yaml: expected a mapping of task name -> instruction text, found nothing" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ NaN scores
def test_nan_and_inf_gold_scores_are_named_errors(tmp_path):
    from llm2comp.evaluation import EvalDataError, load_sts

    (tmp_path / "sts.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\tnan\ne\tf\t3\n")
    with pytest.raises(EvalDataError, match=r"sts.tsv:3: column 'score' must be a finite number, got 'nan'"):
        load_sts(tmp_path / "sts.tsv")
    rows = [{"sentence1": "a", "sentence2": "b", "score": 1}, {"sentence1": "c", "sentence2": "d", "score": 2},
            {"sentence1": "e", "sentence2": "f", "score": float("inf")}]
    (tmp_path / "sts.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")  # writes Infinity
    with pytest.raises(EvalDataError, match=r"sts.jsonl:3: column 'score' must be a finite number, got inf"):
        load_sts(tmp_path / "sts.jsonl")
    (tmp_path / "bool.jsonl").write_text("\n".join(json.dumps({**row, "score": i % 2 == 0})
                                                   for i, row in enumerate(rows)) + "\n")
    with pytest.raises(EvalDataError, match=r"bool.jsonl:1: column 'score' must be a number, got True"):
        load_sts(tmp_path / "bool.jsonl")


def test_sts_task_refuses_non_finite_scores_given_in_python():
    from llm2comp.evaluation import EvalDataError, STSTask

    with pytest.raises(EvalDataError, match=r"scores\[1\] is nan; gold scores must be finite"):
        STSTask(name="x", texts1=["a", "b", "c"], texts2=["d", "e", "f"], scores=[1.0, float("nan"), 2.0])


def test_results_json_never_holds_bare_nan(tmp_path):
    from llm2comp.errors import CorruptFile
    from llm2comp.evaluation import load_results, write_report
    from llm2comp.evaluation.report import NonFiniteResult

    results = {"model": {"name": "m"}, "average": float("nan"),
               "tasks": [{"task_name": "t", "main_metric": "m", "main_score": np.float32("nan"), "n": 3}]}
    with pytest.raises(NonFiniteResult, match=r"average = nan, tasks\[0\]\.main_score = nan"):
        write_report(results, tmp_path / "out")
    assert not (tmp_path / "out" / "results.json").exists()
    undefined = {"test": [{"main_score": 0.5, "nauc_map_at_1_max": np.float64("nan")}]}  # MTEB, few queries
    results = {"model": {"name": "m"}, "average": 0.5, "diagnostics": {"extra": {"value": float("inf")}},
               "tasks": [{"task_name": "t", "main_metric": "m", "main_score": 0.5, "n": 3, "scores": undefined}]}
    json_path, _ = write_report(results, tmp_path / "out")
    text = json_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    saved = load_results(json_path)
    assert saved["tasks"][0]["scores"]["test"][0]["nauc_map_at_1_max"] is None
    assert saved["diagnostics"]["extra"]["value"] is None
    (tmp_path / "old.json").write_text('{"tasks": [], "average": NaN}')
    with pytest.raises(CorruptFile, match=r"old.json: holds NaN, which is not a number"):
        load_results(tmp_path / "old.json")


def test_a_task_whose_main_score_is_nan_stops_at_that_task():
    from llm2comp.evaluation import Embedder, EvalDataError
    from llm2comp.evaluation.runner import run_task
    from llm2comp.evaluation.sts import STSTask

    class Constant:  # a degenerate encoder: every text gets the same vector
        def encode(self, texts, **kwargs):
            return np.ones((len(texts), 4), dtype=np.float32)

    task = STSTask(name="Flat", texts1=["a", "b", "c"], texts2=["d", "e", "f"], scores=[1.0, 2.0, 3.0])
    with pytest.warns(Warning):  # scipy: constant input
        with pytest.raises(EvalDataError, match=r"task Flat .*main score cosine_spearman is nan"):
            run_task(task, Embedder(Constant(), show_progress_bar=False))


# ------------------------------------------------------------------------------------------------ encode --input
def test_encode_fake_gzip_is_a_named_error(saved, tmp_path, capsys):
    _, folder = saved
    (tmp_path / "fake.txt.gz").write_text("not gzip at all\n")
    assert encode(folder, tmp_path, "--input", str(tmp_path / "fake.txt.gz")) == 2
    err = capsys.readouterr().err
    assert "fake.txt.gz: is not valid gzip data" in err and "Traceback" not in err
    assert not (tmp_path / "e.npy").exists()


def test_encode_reads_stdin_pipes_and_refuses_devices_without_texts(saved, tmp_path, monkeypatch, capsys):
    model, folder = saved
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"first text\r\n\nsecond text\n")))
    assert encode(folder, tmp_path, "--input", "-") == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), model.encode(["first text", "second text"]), atol=1e-5)
    read, write = os.pipe()
    os.write(write, b"a piped text\n")
    os.close(write)
    try:
        assert encode(folder, tmp_path, "--input", f"/dev/fd/{read}", output="p.npy") == 0
    finally:
        os.close(read)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.encode(["a piped text"]), atol=1e-5)
    capsys.readouterr()
    assert encode(folder, tmp_path, "--input", "/dev/null", output="n.npy") == 2
    assert "/dev/null: holds no texts" in capsys.readouterr().err


def test_encode_input_folder_and_output_folder(saved, tmp_path, capsys, no_model_load):
    _, folder = saved
    (tmp_path / "texts.txt").mkdir()
    assert encode(folder, tmp_path, "--input", str(tmp_path / "texts.txt")) == 2
    assert "texts.txt: is a folder; expected a file" in capsys.readouterr().err
    (tmp_path / "real.txt").write_text("a\n")
    (tmp_path / "out.npy").mkdir()
    assert encode(folder, tmp_path, "--input", str(tmp_path / "real.txt"), output="out.npy") == 2
    assert "out.npy is a folder; give a file name" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert encode(folder, tmp_path, "--input", str(tmp_path / "real.txt"), output="afile/e.npy") == 2
    assert "afile on its way is a file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ --overlap
def test_overlap_without_windows_is_refused(saved, sts_suite, tmp_path, capsys, monkeypatch):
    model, folder = saved
    (tmp_path / "in.txt").write_text("a text\n")
    assert encode(folder, tmp_path, "--input", str(tmp_path / "in.txt"), "--overlap", "5") == 2  # saved: truncate
    err = capsys.readouterr().err
    assert "--overlap 5 applies only with --long-texts segments or multivector" in err
    assert "the model's saved long_texts is 'truncate'" in err and not (tmp_path / "e.npy").exists()
    assert main(["search", "--model", str(folder), "--overlap", "5", "--long-texts", "truncate"]) == 2
    assert "--long-texts truncate, so texts beyond max_length are cut off" in capsys.readouterr().err
    assert main(["eval", "--model", str(folder), "--suite", str(sts_suite), "--overlap", "5"]) == 2
    assert "overlap=5 applies only with long_texts 'segments' or 'multivector'" in capsys.readouterr().err
    budget = 64 - 1 - 4  # max_length - BOS - memory tokens
    assert main(["eval", "--model", str(folder), "--suite", str(sts_suite), "--long-texts", "segments",
                 "--overlap", str(budget), "--no-diagnostics"]) == 2
    assert f"overlap must be an int in [0, {budget})" in capsys.readouterr().err
    assert encode(folder, tmp_path, "--input", str(tmp_path / "in.txt"), "--overlap", "5",
                  "--long-texts", "segments") == 0
    with pytest.raises(SystemExit):
        encode(folder, tmp_path, "--input", str(tmp_path / "in.txt"), "--overlap", "-1", "--long-texts", "segments")
    assert "argument --overlap: must be >= 0, got -1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ other arguments
@pytest.mark.parametrize(("argv", "message"), [
    (["encode", "--input", "x.txt", "--output", "e.npy", "--device", "foo"], "'foo' is not a device"),
    (["encode", "--input", "x.txt", "--output", "e.npy", "--instruction", " "], "must not be empty"),
    (["encode", "--input", "x.txt", "--output", "e.npy", "--batch-size", "-3"], "must be >= 1, got -3"),
    (["eval", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["eval", "--device", "cuda:banana"], "is not a device"),
    (["search", "--query", ""], "argument --query: must not be empty"),
    (["search", "--top", "0"], "must be >= 1, got 0"),
])
def test_bad_arguments_stop_in_argparse(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_cuda_device_on_a_machine_without_one(capsys):
    import torch

    if torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["eval", "--device", f"cuda:{torch.cuda.device_count()}"])
        assert f"this machine has {torch.cuda.device_count()} CUDA GPU(s)" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit):
            main(["eval", "--device", "cuda"])
        assert "no CUDA GPU is available here" in capsys.readouterr().err


def test_search_documents_with_instructions_and_empty_instruction(saved, tmp_path, capsys):
    model, folder = saved
    (tmp_path / "docs.jsonl").write_text('{"text": "a doc", "instruction": "Represent"}\n')
    assert main(["search", "--model", str(folder), "--documents", str(tmp_path / "docs.jsonl")]) == 2
    assert "rows carry an 'instruction' field, but documents are embedded without instruction" in (
        capsys.readouterr().err)
    (tmp_path / "docs.txt").write_text("cats purr\ndogs bark\n")
    assert main(["search", "--model", str(folder), "--documents", str(tmp_path / "docs.txt"), "--query", "cat",
                 "--instruction", "", "--top", "1"]) == 0
    out = capsys.readouterr().out
    scores = model.similarity(model.encode_query(["cat"]), model.encode_document(["cats purr", "dogs bark"]))[0]
    best = ["cats purr", "dogs bark"][int(scores.argmax())]
    assert f"1. {float(scores.max()):.3f}  {best}" in out


def test_eval_files_may_be_pipes_but_not_folders(tmp_path):
    import threading

    from llm2comp.evaluation import EvalDataError, load_sts

    fifo = tmp_path / "piped.tsv"  # a named pipe: what `mkfifo` (or a process writing it) gives
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(b"sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\ne\tf\t3\n",))
    writer.start()
    try:
        assert load_sts(fifo).scores == [1.0, 2.0, 3.0]
    finally:
        writer.join(timeout=10)
    (tmp_path / "sts.tsv").mkdir()
    with pytest.raises(EvalDataError, match=r"sts.tsv is a folder; expected a .tsv, .csv or .jsonl file"):
        load_sts(tmp_path / "sts.tsv")


def test_encode_field_on_a_txt_input_is_refused(saved, tmp_path, capsys, no_model_load):
    _, folder = saved
    (tmp_path / "t.txt").write_text("a\n")
    assert encode(folder, tmp_path, "--input", str(tmp_path / "t.txt"), "--field", "body") == 2
    assert "--field body applies only to a .jsonl input" in capsys.readouterr().err


def write_suite(tmp_path, head="", task=""):
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\tscore\n" + "".join(f"a{i}\tb{i}\t{i}\n" for i in range(4)))
    (tmp_path / "s.yaml").write_text(f"name: s\n{head}tasks:\n  - type: sts\n    path: pairs.tsv\n{task}")
    return tmp_path / "s.yaml"


@pytest.mark.parametrize(("head", "task", "message"), [
    ("seed: x\n", "", "s.yaml: seed must be a whole number >= 0, got 'x'"),
    ("max_items: ten\n", "", "s.yaml: max_items must be a whole number >= 1, got 'ten'"),
    ("", "    seed: banana\n", "s.yaml: tasks[0]: seed must be a whole number >= 0, got 'banana'"),
    ("", "    max_items: true\n", "s.yaml: tasks[0]: max_items must be a whole number >= 1, got True"),
])
def test_suite_file_options_are_checked(tmp_path, head, task, message):
    from llm2comp.evaluation import EvalDataError, load_suite_file

    with pytest.raises(EvalDataError) as error:
        load_suite_file(write_suite(tmp_path, head, task))
    assert message in str(error.value)


def test_classification_folds_are_checked(tmp_path):
    from llm2comp.evaluation import EvalDataError, load_suite_file

    (tmp_path / "c.csv").write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(8)))
    (tmp_path / "c.yaml").write_text("tasks:\n  - type: classification\n    path: c.csv\n    n_folds: 1\n")
    with pytest.raises(EvalDataError, match=r"c.yaml: tasks\[0\]: n_folds must be a whole number >= 2, got 1"):
        load_suite_file(tmp_path / "c.yaml")


def test_suite_file_seed_is_used_when_no_seed_is_given(tmp_path, tiny_llama_dir):
    from llm2comp.evaluation.suites import get_suite

    suite = write_suite(tmp_path, "seed: 7\nmax_items: 3\n")
    assert get_suite(suite).seed == 7 and get_suite(suite, seed=3).seed == 3
    assert main(["eval", "--model", str(tiny_llama_dir), "--pooling", "mean", "--suite", str(suite), "--output",
                 str(tmp_path / "out"), "--no-diagnostics"]) == 0  # no --seed: the file's
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["settings"]["seed"] == 7


def test_suite_given_as_a_folder(tmp_path, capsys):
    assert main(["eval", "--suite", str(tmp_path)]) == 2
    assert "is a folder; give a suite .yaml file" in capsys.readouterr().err


def test_csv_line_numbers_count_the_lines_of_multi_line_cells(tmp_path):
    from llm2comp.evaluation import EvalDataError, load_sts

    (tmp_path / "m.csv").write_text('sentence1,sentence2,score\n"a\nb",c,1\nd,e,2\nf,g,x\n')
    with pytest.raises(EvalDataError, match=r"m.csv:5: column 'score' must be a number, got 'x'"):
        load_sts(tmp_path / "m.csv")
    (tmp_path / "ok.csv").write_text('sentence1,sentence2,score\n"a\nb",c,1\nd,e,2\nf,g,3\n')
    assert load_sts(tmp_path / "ok.csv").texts1[0] == "a\nb"


def test_compare_with_broken_or_unrelated_saved_results(sts_suite, tiny_llama_dir, tmp_path, capsys, no_model_load):
    args = ["eval", "--model", str(tiny_llama_dir), "--suite", str(sts_suite)]
    (tmp_path / "bad.json").write_text(json.dumps({"tasks": [{"task_name": "TinySTS", "main_metric": "m"}]}))
    assert main([*args, "--compare", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: tasks[0]: 'main_score' is missing" in capsys.readouterr().err
    other = {"model": {"name": "o"}, "suite": "x", "tasks": [{"task_name": "Zzz", "main_metric": "m", "main_score": 0.3}]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main([*args, "--compare", str(tmp_path / "other.json")]) == 2
    assert "the saved results (o, suite x) share no task with the tiny suite" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["eval", "--output", ""], ["eval", "--compare", " "], ["eval", "--suite", ""], ["eval", "--instructions", ""],
    ["eval", "--model", ""], ["encode", "--model", "", "--input", "t.txt", "--output", "e.npy"],
    ["encode", "--input", "", "--output", "e.npy"], ["search", "--documents", ""],
])
def test_empty_names_are_refused(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--output ""` used to write results.json into the current folder
    with pytest.raises(SystemExit):
        main(argv)
    assert "must not be empty or whitespace only" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_reranking_file_is_read_once_so_a_pipe_works(tmp_path):
    import threading

    from llm2comp.evaluation import load_reranking

    fifo = tmp_path / "rerank.jsonl"
    os.mkfifo(fifo)
    rows = [{"query": f"q{i}", "positive": [f"p{i}"], "negative": [f"n{i}", "x"]} for i in range(3)]
    writer = threading.Thread(target=fifo.write_text, args=("\n".join(json.dumps(r) for r in rows) + "\n",))
    writer.start()
    try:
        task = load_reranking(fifo)
    finally:
        writer.join(timeout=10)
    assert [item.query for item in task.items] == ["q0", "q1", "q2"] and task.items[0].negatives == ["n0", "x"]


def test_suite_task_instruction_and_name_must_be_text(tmp_path):
    from llm2comp.evaluation import EvalDataError, load_suite_file

    with pytest.raises(EvalDataError, match=r"s.yaml: tasks\[0\]: instruction must be text, got int 5"):
        load_suite_file(write_suite(tmp_path, "", "    instruction: 5\n"))


@pytest.mark.parametrize(("settings", "message"), [
    ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
    ({"max_items": 2.5}, "max_items must be a whole number >= 1 or None, got 2.5"),
    ({"seed": -1}, "seed must be a whole number >= 0 or None, got -1"),
    ({"overlap": -2, "long_texts": "segments"}, "overlap must be a whole number >= 0 or None, got -2"),
    ({"long_texts": "windows"}, "long_texts must be one of"),
    ({"instructions": ["LeeDocSim"]}, "instructions must be a dict of task name -> instruction text"),
])
def test_eval_settings_are_checked_when_made(settings, message, no_model_load):
    from llm2comp.errors import LLM2CompError
    from llm2comp.evaluation import EvalSettings

    with pytest.raises(LLM2CompError) as error:
        EvalSettings(**settings)
    assert message in str(error.value)


def test_instructions_and_suite_files_may_be_pipes(sts_suite, tiny_llama_dir):
    from llm2comp.evaluation import EvalSettings, evaluate
    from llm2comp.yaml_files import read_yaml

    read, write = os.pipe()  # `--instructions <(echo 'TinySTS: Find similar text')`
    os.write(write, b"TinySTS: Find similar text\n")
    os.close(write)
    try:
        assert read_yaml(f"/dev/fd/{read}", "instructions file") == {"TinySTS": "Find similar text"}
    finally:
        os.close(read)
    settings = EvalSettings(pooling="mean", instructions={"TinySTS": "Find similar text"}, diagnostics=False,
                            show_progress_bar=False)
    results = evaluate(str(tiny_llama_dir), sts_suite, settings)
    assert results["tasks"][0]["instruction"] == "Find similar text"


@pytest.mark.parametrize("name", ["texts.csv", "texts.tsv.gz", "texts.parquet"])
def test_encode_refuses_tables_whose_lines_are_not_texts(saved, tmp_path, capsys, no_model_load, name):
    _, folder = saved
    (tmp_path / name).write_bytes(b"id,text\n1,hello\n")  # before: the header line was embedded as a text
    assert encode(folder, tmp_path, "--input", str(tmp_path / name)) == 2
    err = capsys.readouterr().err
    assert f"{name}: is a .{name.split('.')[1]} file, whose lines are not texts" in err
    assert not (tmp_path / "e.npy").exists()
