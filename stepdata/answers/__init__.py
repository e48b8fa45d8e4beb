"""Final answers: extract them from text, then decide whether they match the gold one."""

from stepdata.answers.extract import extract_answer, last_boxed
from stepdata.answers.numbers import PlainNumber, numbers_equal, parse_plain_number
from stepdata.answers.policy import (
    LABEL_OUTCOMES,
    AnswerPolicy,
    Label,
    count_outcomes,
    is_unfinished,
)
from stepdata.answers.verify import (
    DEFAULT_CONFIG,
    AnswerCheckConfig,
    Verdict,
    answers_match,
    check_answer,
    check_answers,
)

__all__ = [
    "DEFAULT_CONFIG",
    "AnswerCheckConfig",
    "AnswerPolicy",
    "LABEL_OUTCOMES",
    "Label",
    "PlainNumber",
    "Verdict",
    "answers_match",
    "check_answer",
    "check_answers",
    "count_outcomes",
    "extract_answer",
    "is_unfinished",
    "last_boxed",
    "numbers_equal",
    "parse_plain_number",
]
