"""Local evaluation files (TSV/CSV/JSONL), their errors, and suites from YAML files."""

import json

import pytest

from llm2comp.evaluation import (
    EvalDataError,
    load_classification,
    load_clustering,
    load_pair_classification,
    load_reranking,
    load_retrieval,
    load_sts,
    load_suite_file,
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, rows):
    return write(path, "\n".join(json.dumps(row) for row in rows) + "\n")


def test_sts_tsv_csv_jsonl_and_custom_columns(tmp_path):
    tsv = write(tmp_path / "sts.tsv", "sentence1\tsentence2\tscore\na cat\ta dog\t1.5\nrain\tsun\t0\nx\ty\t4\n")
    task = load_sts(tsv)
    assert task.name == "sts" and task.texts1 == ["a cat", "rain", "x"] and task.scores == [1.5, 0.0, 4.0]
    csv = write(tmp_path / "sts.csv", 'left,right,gold\n"a, quoted, text",b,1\nc,d,2\ne,f,3\n')
    task = load_sts(csv, text1="left", text2="right", score="gold", name="Mine")
    assert task.name == "Mine" and task.texts1[0] == "a, quoted, text"
    rows = [{"sentence1": f"s{i}", "sentence2": f"t{i}", "score": i} for i in range(10)]
    task = load_sts(jsonl(tmp_path / "sts.jsonl", rows), max_items=4, seed=1)
    assert task.n_items == 4 and task.texts1 == sorted(task.texts1, key=lambda t: int(t[1:]))  # file order kept
    assert load_sts(tmp_path / "sts.jsonl", max_items=4, seed=1).texts1 == task.texts1  # seeded


def test_missing_column_names_file_column_and_columns_found(tmp_path):
    path = write(tmp_path / "bad.tsv", "text1\ttext2\tscore\na\tb\t1\n")
    with pytest.raises(EvalDataError) as error:
        load_sts(path)
    message = str(error.value)
    assert "bad.tsv" in message and "'sentence1'" in message and "['text1', 'text2', 'score']" in message


def test_empty_file_and_empty_cell_and_bad_number(tmp_path):
    with pytest.raises(EvalDataError, match="empty.tsv is empty"):
        load_sts(write(tmp_path / "empty.tsv", "sentence1\tsentence2\tscore\n"))
    with pytest.raises(EvalDataError, match="empty.jsonl is empty"):
        load_clustering(write(tmp_path / "empty.jsonl", "\n"))
    with pytest.raises(EvalDataError, match=r"cell.tsv:3: column 'sentence2' \(text2\) is empty"):
        load_sts(write(tmp_path / "cell.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\t \t2\n"))
    with pytest.raises(EvalDataError, match=r"num.csv:2: column 'score' must be a number"):
        load_sts(write(tmp_path / "num.csv", "sentence1,sentence2,score\na,b,high\n"))
    with pytest.raises(EvalDataError, match="unsupported file type '.txt'"):
        load_sts(write(tmp_path / "x.txt", "a"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sts(tmp_path / "nope.tsv")
    with pytest.raises(EvalDataError, match=r"bad.jsonl:2: invalid JSON"):
        load_classification(write(tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\n{oops\n'))
    with pytest.raises(EvalDataError, match=r"cells.tsv:2: 2 cells, but the header has 3"):
        load_sts(write(tmp_path / "cells.tsv", "sentence1\tsentence2\tscore\na\tb\n"))


def test_single_class_labels_are_rejected_naming_file_and_column(tmp_path):
    rows = [{"text": f"t{i}", "intent": "same"} for i in range(5)]
    path = jsonl(tmp_path / "one.jsonl", rows)
    for loader in (load_classification, load_clustering):
        with pytest.raises(EvalDataError, match=r"one.jsonl: column 'intent' has 1 distinct label"):
            loader(path, label="intent")
    pairs = write(tmp_path / "pairs.tsv", "sentence1\tsentence2\tlabel\na\tb\t1\nc\td\t1\n")
    with pytest.raises(EvalDataError, match=r"pairs.tsv: column 'label' has 1 distinct"):
        load_pair_classification(pairs)
    with pytest.raises(EvalDataError, match=r"column 'label' must be 0 or 1"):
        load_pair_classification(write(tmp_path / "p2.tsv", "sentence1\tsentence2\tlabel\na\tb\tmaybe\n"))
    lonely = jsonl(tmp_path / "rare.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"},
                                             {"text": "c", "label": "y"}])
    with pytest.raises(EvalDataError, match="rare.jsonl: column 'label': class"):
        load_classification(lonely)
    with pytest.raises(EvalDataError, match="all gold scores are equal|single value"):
        load_sts(write(tmp_path / "flat.tsv", "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t1\ne\tf\t1\n"))


def test_classification_split_column_and_stratified_subsample(tmp_path):
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "split": "train" if i < 8 else "test"} for i in range(12)]
    task = load_classification(jsonl(tmp_path / "c.jsonl", rows))
    assert len(task.texts) == 8 and len(task.test_texts) == 4
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(40)]
    task = load_classification(jsonl(tmp_path / "d.jsonl", rows), max_items=10)
    assert task.n_items == 10 and sorted(set(task.labels)) == ["a", "b"]
    bad = [dict(row, split="dev") for row in rows]
    with pytest.raises(EvalDataError, match="must hold 'train' or 'test'"):
        load_classification(jsonl(tmp_path / "e.jsonl", bad))


def test_retrieval_beir_files_and_unknown_ids(tmp_path):
    queries = jsonl(tmp_path / "q.jsonl", [{"id": "q1", "text": "cats"}, {"id": "q2", "text": "dogs"},
                                           {"id": "q3", "text": "no judgement"}])
    corpus = jsonl(tmp_path / "c.jsonl", [{"id": "d1", "title": "Cats", "text": "meow"}, {"id": "d2", "text": "woof"}])
    qrels = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n")
    task = load_retrieval(queries, corpus, qrels)
    assert task.queries == ["cats", "dogs"]  # q3 has no relevant document: dropped like MTEB
    assert task.corpus == ["Cats meow", "woof"] and task.relevance == [{0: 1.0}, {1: 2.0}]
    write(tmp_path / "bad.tsv", "query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(EvalDataError, match=r"bad.tsv:2: column 'corpus-id': unknown document id 'd9'"):
        load_retrieval(queries, corpus, tmp_path / "bad.tsv")
    write(tmp_path / "cols.tsv", "qid\tdid\tscore\nq1\td1\t1\n")
    with pytest.raises(EvalDataError, match="column 'query-id' \\(query_id\\) is missing"):
        load_retrieval(queries, corpus, tmp_path / "cols.tsv")
    task = load_retrieval(queries, corpus, tmp_path / "cols.tsv", query_id="qid", corpus_id="did")
    assert task.n_items == 1


def test_reranking_list_and_row_layouts(tmp_path):
    listed = jsonl(tmp_path / "r.jsonl", [{"query": "q", "positive": ["p1", "p2"], "negative": ["n1"]},
                                          {"query": "only positives", "positive": ["p"], "negative": []}])
    task = load_reranking(listed)
    assert task.n_items == 1 and task.items[0].positives == ["p1", "p2"]
    rows = write(tmp_path / "r.csv", "query,document,label\nq,p,1\nq,n,0\nq2,x,0\n")
    task = load_reranking(rows)
    assert task.n_items == 1 and task.items[0].negatives == ["n"]
    with pytest.raises(EvalDataError, match="no query has both a positive and a negative"):
        load_reranking(write(tmp_path / "none.csv", "query,document,label\nq,p,1\n"))


def test_suite_from_yaml(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write(data / "sts.tsv", "s1\ts2\tgold\na\tb\t1\nc\td\t2\ne\tf\t3\n")
    jsonl(data / "intents.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)])
    write(tmp_path / "suite.yaml", """
name: mine
tasks:
  - type: sts
    path: data/sts.tsv
    columns: {text1: s1, text2: s2, score: gold}
  - type: classification
    name: Intents
    path: data/intents.jsonl
    instruction: Classify the intent
    n_folds: 2
  - builtin: LeeDocSim
    max_items: 5
""")
    suite = load_suite_file(tmp_path / "suite.yaml")
    assert suite.name == "mine" and [t.name for t in suite.tasks] == ["sts", "Intents", "LeeDocSim"]
    assert suite.tasks[1].instruction == "Classify the intent" and suite.tasks[1].n_folds == 2
    assert suite.tasks[2].n_items == 10  # 5 documents -> 10 pairs
    write(tmp_path / "bad.yaml", "tasks:\n  - type: sts\n    path: data/sts.tsv\n    colums: {}\n")
    with pytest.raises(EvalDataError, match=r"bad.yaml: tasks\[0\]: unknown key\(s\) \['colums'\]"):
        load_suite_file(tmp_path / "bad.yaml")
    write(tmp_path / "role.yaml", "tasks:\n  - type: sts\n    path: data/sts.tsv\n    columns: {txt: s1}\n")
    with pytest.raises(EvalDataError, match=r"unknown column role\(s\) \['txt'\]"):
        load_suite_file(tmp_path / "role.yaml")
    write(tmp_path / "kind.yaml", "tasks:\n  - type: regression\n    path: x.tsv\n")
    with pytest.raises(EvalDataError, match="'type' must be one of"):
        load_suite_file(tmp_path / "kind.yaml")
    write(tmp_path / "empty.yaml", "name: nothing\n")
    with pytest.raises(EvalDataError, match="non-empty 'tasks' list"):
        load_suite_file(tmp_path / "empty.yaml")


def test_compressed_files_are_read_by_their_inner_suffix(tmp_path):
    import gzip

    path = tmp_path / "sts.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("sentence1\tsentence2\tscore\na cat\ta dog\t1.5\nrain\tsun\t0\nx\ty\t4\n")
    task = load_sts(path)
    assert task.texts2 == ["a dog", "sun", "y"] and task.scores == [1.5, 0.0, 4.0]
    with pytest.raises(EvalDataError, match=r"unsupported file type '.txt'"):
        load_sts(write(tmp_path / "sts.txt", "a\n"))
