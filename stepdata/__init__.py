"""stepdata: step-level preference data for math reasoning.

The public API a notebook needs is importable from here and needs only the core
dependencies (pandas, pyarrow, sympy, click, openai, math-verify); model engines
(torch, transformers, vLLM, TRL) are imported only by the code that uses them.
"""

__version__ = "0.1.0"

from stepdata.answers import (
    AnswerCheckConfig,
    AnswerPolicy,
    Verdict,
    answers_match,
    check_answer,
    extract_answer,
)
from stepdata.embedded import make_problems
from stepdata.io import SchemaError, read_metadata, read_table, write_table
from stepdata.loaders import BadRowError, load_problems
from stepdata.prompts import PromptTemplate, load_prompt
from stepdata.steps import join_steps, split_steps, step_body

__all__ = [
    "AnswerCheckConfig",
    "AnswerPolicy",
    "BadRowError",
    "PromptTemplate",
    "SchemaError",
    "Verdict",
    "__version__",
    "answers_match",
    "check_answer",
    "extract_answer",
    "join_steps",
    "load_problems",
    "load_prompt",
    "make_problems",
    "read_metadata",
    "read_table",
    "split_steps",
    "step_body",
    "write_table",
]
