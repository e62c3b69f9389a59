"""Run LLM2Comp models in MTEB (v2): an encoder satisfying `mteb.EncoderProtocol`, and the paper's 14 tasks.

Instructions follow the paper (E5 style): a *document* input (`prompt_type="document"`: retrieval
corpora, reranking candidates) never gets one; a *query* input, and every input of a symmetric task
(STS, classification, clustering, pair classification: `prompt_type=None`), gets the task's
instruction as `"{instruction}: {text}"` (the model's template). Per-task instructions come, in
order, from the `instructions` mapping given to the adapter, from `DEFAULT_INSTRUCTIONS` (the
E5-mistral / LLM2Vec instructions for the 14 paper tasks), then from the generic instruction of the
task type. An empty string switches the instruction off for a task.

The `paper14` and `longembed` suites need the Hugging Face Hub (mteb downloads each data set);
without it, `load_mteb_suite` raises `HubUnavailableError` with what to do instead of a traceback.
`longembed` is MTEB's LongEmbed benchmark (Zhu et al. 2024): six retrieval tasks whose documents run
to thousands of tokens (32k for the synthetic needle / passkey ones), the place for
`long_texts="segments"`. A multivector model cannot run in MTEB, which scores one vector per text.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import InvalidSetting, LLM2CompError, MissingDependency
from .base import finite_main_score
from .encoders import as_encoder, default_long_texts, embedding_dimension

MTEB_HINT = "pip install 'mteb>=2'   (or: pip install 'llm2comp[eval]')"

PAPER14 = ("BiorxivClusteringS2S", "MedrxivClusteringS2S", "TwentyNewsgroupsClustering", "SciFact", "NFCorpus",
           "ArguAna", "STS17", "SICK-R", "STSBenchmark", "Banking77Classification", "EmotionClassification",
           "SprintDuplicateQuestions", "StackOverflowDupQuestions", "SciDocsRR")
PAPER14_SUBSETS = {"STS17": ["en-en"]}  # the paper reports English STS17 only
LONGEMBED = ("LEMBNarrativeQARetrieval", "LEMBQMSumRetrieval", "LEMBWikimQARetrieval", "LEMBSummScreenFDRetrieval",
             "LEMBNeedleRetrieval", "LEMBPasskeyRetrieval")
MTEB_SUITES = {"paper14": PAPER14, "longembed": LONGEMBED}
MTEB_SUITE_DESCRIPTIONS = {"paper14": "the paper's 14 MTEB datasets (mteb.evaluate)",
                           "longembed": "MTEB LongEmbed: 6 long-document retrieval datasets (mteb.evaluate)"}
STS_INSTRUCTION = "Retrieve semantically similar text"
DEFAULT_INSTRUCTIONS = {
    "BiorxivClusteringS2S": "Identify the main category of Biorxiv papers based on the titles",
    "MedrxivClusteringS2S": "Identify the main category of Medrxiv papers based on the titles",
    "TwentyNewsgroupsClustering": "Identify the topic or theme of the given news articles",
    "SciFact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "NFCorpus": "Given a question, retrieve relevant documents that best answer the question",
    "ArguAna": "Given a claim, find documents that refute the claim",
    "STS17": STS_INSTRUCTION,
    "SICK-R": STS_INSTRUCTION,
    "STSBenchmark": STS_INSTRUCTION,
    "Banking77Classification": "Given a online banking query, find the corresponding intents",
    "EmotionClassification": "Classify the emotion expressed in the given Twitter message into one of the six "
                             "emotions: anger, fear, joy, love, sadness, and surprise",
    "SprintDuplicateQuestions": "Retrieve duplicate questions from Sprint forum",
    "StackOverflowDupQuestions": "Retrieve duplicate questions from StackOverflow forum",
    "SciDocsRR": "Given a title of a scientific paper, retrieve the titles of other relevant papers",
}
TYPE_INSTRUCTIONS = {
    "STS": STS_INSTRUCTION,
    "Retrieval": "Given a query, retrieve relevant passages",
    "Reranking": "Given a query, retrieve relevant passages",
    "Classification": "Classify the given text",
    "Clustering": "Identify the topic or theme of the given text",
    "PairClassification": "Retrieve text that is semantically equivalent to the given text",
}


class HubUnavailableError(LLM2CompError, ConnectionError):
    """An MTEB data set could not be downloaded (no Hub access)."""


def require_mteb():
    try:
        import mteb
    except ImportError as error:
        raise MissingDependency(f"the MTEB adapter needs mteb: {MTEB_HINT}") from error
    return mteb


class MTEBEncoder:
    """An encoder as an MTEB encoder (`isinstance(MTEBEncoder(...), mteb.EncoderProtocol)`).

    `model_name` is a model folder / name (loaded with `LLM2Comp.from_pretrained(model_name,
    revision=revision, device=device, **load_kwargs)`), a ready `TextEncoder` such as an `LLM2Comp`,
    or a sentence-transformers-like model (wrapped by `encoders.SentenceEncoder`).
    """

    def __init__(self, model_name, revision: str | None = None, *, device: str | None = None,
                 instructions: dict[str, str] | None = None, batch_size: int = 16, name: str | None = None,
                 long_texts: str | None = None, overlap: int | None = None, **load_kwargs):
        if model_name is None or isinstance(model_name, (str, os.PathLike)):
            from ..models.encoder import LLM2Comp

            self.model = LLM2Comp.from_pretrained(model_name, revision=revision, device=device, **load_kwargs)
        else:
            self.model = as_encoder(model_name)
        self.instructions = dict(instructions or {})
        self.batch_size = batch_size
        config = getattr(self.model, "config", None)
        self.name = name or str(getattr(config, "backbone", None) or getattr(self.model, "name", None) or "model")
        self.revision = revision
        self.long_texts = long_texts or default_long_texts(self.model)
        self.overlap = overlap
        if self.long_texts == "multivector":
            raise InvalidSetting("MTEB scores one vector per text: use long_texts='segments' (or 'truncate') with MTEB "
                             "suites; multivector runs on the offline task types (retrieval, reranking)")

    def instruction_for(self, task_name: str, task_type: str, prompt_type=None) -> str | None:
        """The instruction for one input kind of a task (module docstring), or None."""
        if prompt_type is not None and str(getattr(prompt_type, "value", prompt_type)) == "document":
            return None
        for table in (self.instructions, DEFAULT_INSTRUCTIONS):
            if task_name in table:
                return table[task_name] or None
        return TYPE_INSTRUCTIONS.get(task_type)

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs) -> np.ndarray:
        """Embed every text of a DataLoader of batches (`batch["text"]`), float32 (n, d)."""
        instruction = self.instruction_for(task_metadata.name, task_metadata.type, prompt_type)
        texts = [text for batch in inputs for text in batch["text"]]
        if not texts:
            return np.zeros((0, embedding_dimension(self.model) or 0), dtype=np.float32)
        texts = [text if text.strip() else " " for text in texts]  # MTEB data has rare empty documents
        return self.model.encode(texts, batch_size=kwargs.get("batch_size") or self.batch_size,
                                 show_progress_bar=kwargs.get("show_progress_bar", False), instruction=instruction,
                                 convert_to_numpy=True, long_texts=self.long_texts,
                                 overlap=self.overlap)

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """Cosine similarity matrix (n, m) (the model's own `similarity` where it has one: LLM2Comp)."""
        own = getattr(self.model, "similarity", None)
        if callable(own):
            return own(embeddings1, embeddings2)
        a = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings1)).float(), dim=-1)
        b = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings2)).float(), dim=-1)
        return a @ b.T

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        """Cosine similarity of row i with row i, (n,)."""
        a = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings1)).float(), dim=-1)
        b = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings2)).float(), dim=-1)
        return (a * b).sum(-1)

    @property
    def mteb_model_meta(self):
        from mteb.models import ModelMeta

        base = self.name.replace("\\", "/").rstrip("/").split("/")[-1] or "model"
        return ModelMeta.create_empty({
            "name": f"llm2comp/{base}", "revision": self.revision or "local",
            "embed_dim": embedding_dimension(self.model), "similarity_fn_name": "cosine", "use_instructions": True,
            "max_tokens": getattr(getattr(self.model, "config", None), "max_length", None),
            "framework": ["PyTorch", "Transformers"],
        })


def load_task_data(task, suite: str = "paper14") -> None:
    """Load an mteb task's data; a download failure becomes `HubUnavailableError` with what to do."""
    if task.data_loaded:
        return
    try:
        task.load_data()
    except (ConnectionError, OSError, TimeoutError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubUnavailableError(
            f"the {suite} suite downloads its data sets from the Hugging Face Hub, and {task.metadata.name} "
            f"could not be fetched ({type(error).__name__}: {first_line}). Check the network and "
            "HF_HUB_OFFLINE / HF_ENDPOINT, or evaluate offline with --suite "
            f"{'longdoc' if suite == 'longembed' else 'offline'} (or a suite YAML on "
            "your own files).") from None


def load_paper14(names=PAPER14) -> list:
    """The paper's tasks from mteb (`load_mteb_suite("paper14")`)."""
    return load_mteb_suite("paper14", names)


def load_mteb_suite(suite: str, names=None) -> list:
    """The tasks of an MTEB suite (`MTEB_SUITES`); the first one's data is loaded at once, so a missing
    Hub fails fast. The others load one at a time in `run_mteb` (and are unloaded after), to keep
    memory small."""
    if suite not in MTEB_SUITES:
        raise InvalidSetting(f"unknown MTEB suite {suite!r}; choose one of {list(MTEB_SUITES)}")
    mteb = require_mteb()
    names = list(names or MTEB_SUITES[suite])
    found = {task.metadata.name: task for task in mteb.get_tasks(tasks=names)}
    tasks = [mteb.get_task(name, hf_subsets=PAPER14_SUBSETS[name]) if name in PAPER14_SUBSETS else found[name]
             for name in names]
    load_task_data(tasks[0], suite)
    return tasks


def run_mteb(encoder: MTEBEncoder, tasks, show_progress_bar: bool = True, suite: str = "paper14") -> list[dict]:
    """Evaluate `tasks` with mteb.evaluate (no result cache) and return llm2comp task records."""
    import time

    mteb = require_mteb()
    records = []
    for task in tasks:
        start = time.perf_counter()
        load_task_data(task, suite)
        count = _count_items(task)  # before mteb.evaluate, which may transform the data
        result = mteb.evaluate(encoder, task, cache=None, show_progress_bar=show_progress_bar,
                               encode_kwargs={"batch_size": encoder.batch_size, "show_progress_bar": show_progress_bar})
        task_result = result.task_results[0]
        records.append({
            "task_name": task.metadata.name, "type": task.metadata.type, "main_metric": task.metadata.main_score,
            "main_score": finite_main_score(task_result.get_score(), task.metadata.name, task.metadata.main_score,
                                            "mteb"), "n": count, "unit": "samples",
            "instruction": encoder.instruction_for(task.metadata.name, task.metadata.type, "query"),
            "scores": task_result.to_dict().get("scores", {}), "evaluation_time": time.perf_counter() - start,
            "source": "mteb",
        })
        task.unload_data()  # the paper's data sets are large; keep one in memory at a time
    return records


def _count_items(task) -> int | None:
    """Evaluation-split size of a loaded mteb task (queries for retrieval), best effort."""
    try:
        split = task.metadata.eval_splits[0]
        dataset = task.dataset
        subsets = dataset.values() if isinstance(dataset, dict) and split not in dataset else [dataset]
        total = 0
        for subset in subsets:
            data = subset[split]
            total += len(data["queries"]) if isinstance(data, dict) and "queries" in data else len(data)
        return total
    except Exception:  # only a count for the report
        return None
