"""Task instructions for supervised contrastive training (stage 3), and how they reach a query.

The public E5 mix (used by E5-Mistral, LLM2Vec and LLM2Comp) is a folder of JSONL files, one
per dataset; the file stem names the task (``msmarco_passage.jsonl``) and each task has a fixed
one-sentence instruction, published with E5-Mistral (Wang et al., 2024, "Improving Text
Embeddings with Large Language Models") and reused unchanged by LLM2Vec. They are listed here as
data. Two datasets come in two halves with different instructions (``allnli_split1`` /
``allnli_split2``, ``quora_duplicates_split1`` / ``quora_duplicates_split2``); the short names
``allnli`` and ``quora_duplicates`` mean the first half.

Instructions go on **queries only**, formatted with the model's instruction template
(``"{instruction}: {text}"`` by default, see `llm2comp.inputs`); documents never get one.
(LLM2Vec also put the instruction on the documents of the symmetric tasks; LLM2Comp's paper
does not, and neither do we.)
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import UnknownName

_RETRIEVE_WIKI = "Given a question, retrieve Wikipedia passages that answer the question"
_CHINESE_WEB = "Given a Chinese search query, retrieve web passages that answer the question"

#: task name (an E5 mix file stem) -> instruction.
E5_INSTRUCTIONS: dict[str, str] = {
    "allnli_split1": "Given a premise, retrieve a hypothesis that is entailed by the premise",
    "allnli_split2": "Retrieve semantically similar text",
    "dureader": _CHINESE_WEB,
    "eli5_question_answer": "Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum",
    "fever": "Given a claim, retrieve documents that support or refute the claim",
    "hotpot_qa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "miracl": _RETRIEVE_WIKI,
    "mrtydi": _RETRIEVE_WIKI,
    "msmarco_passage": "Given a web search query, retrieve relevant passages that answer the query",
    "msmarco_document": "Given a web search query, retrieve relevant documents that answer the query",
    "nq": _RETRIEVE_WIKI,
    "quora_duplicates_split1": "Given a question, retrieve questions that are semantically equivalent to the "
                               "given question",
    "quora_duplicates_split2": "Find questions that have the same meaning as the input question",
    "squad": "Retrieve Wikipedia passages that answer the question",
    "t2ranking": _CHINESE_WEB,
    "trivia_qa": "Retrieve Wikipedia passages that answer the question",
}

#: Short names people use for the same tasks.
TASK_ALIASES: dict[str, str] = {
    "allnli": "allnli_split1",
    "eli5": "eli5_question_answer",
    "quora_duplicates": "quora_duplicates_split1",
    "quora": "quora_duplicates_split1",
    "hotpotqa": "hotpot_qa",
    "triviaqa": "trivia_qa",
}

#: The offline demo task (Wikipedia heading -> paragraph); not an E5 task, not evaluation data.
WIKI_DEMO_TASK = "wiki_heading_paragraph"
WIKI_DEMO_INSTRUCTION = "Given a Wikipedia article title and section heading, retrieve the paragraph of that section"
#: The offline inverse-cloze task (a sentence -> the rest of its paragraph); not evaluation data.
WIKI_CLOZE_TASK = "wiki_sentence_paragraph"
WIKI_CLOZE_INSTRUCTION = "Given a sentence from a Wikipedia article, retrieve the paragraph it was taken from"


def instruction_table(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The E5 table plus aliases, the demo task and `extra` (which wins), keyed by task name."""
    table = dict(E5_INSTRUCTIONS)
    table.update({alias: E5_INSTRUCTIONS[target] for alias, target in TASK_ALIASES.items()})
    table[WIKI_DEMO_TASK] = WIKI_DEMO_INSTRUCTION
    table[WIKI_CLOZE_TASK] = WIKI_CLOZE_INSTRUCTION
    table.update(extra or {})
    return table


def instruction_for(task: str, extra: Mapping[str, str] | None = None) -> str:
    """The instruction of `task`; KeyError listing the known tasks if there is none."""
    table = instruction_table(extra)
    if task not in table:
        raise UnknownName(f"unknown task {task!r}; known tasks: {', '.join(sorted(table))}. "
                       "Give the row an 'instruction' instead, or pass instructions={task: ...}")
    return table[task]


