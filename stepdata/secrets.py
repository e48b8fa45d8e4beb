"""Secrets: which config keys hold one, and one scrub for every text that may carry one.

Two jobs, kept apart:

- :func:`redact_secrets` hides the values of real secrets in a run's config (API keys,
  passwords, authorization headers, access/auth/bearer tokens such as ``hf_token``)
  before the config is stored or hashed. A key is a secret by what its last word
  names (:func:`is_secret_name`): ``hf_token`` and ``api_key`` are, ``max_tokens``,
  ``judge_max_tokens``, ``tokenizer``, ``eos_token`` and ``api_key_env`` (the *name*
  of a variable) are not, so every setting that changes results is recorded and hashed.
- :func:`scrub_secrets` removes secrets from free text (a server's error message, a
  log line, a table cell): the values of secret environment variables
  (``OPENAI_API_KEY``, ``VLLM_API_KEY``, ``HF_TOKEN``, ...) and anything shaped like a
  key (``sk-...``, ``hf_...``, ``Bearer ...``, ``api_key=...``). It is applied where
  errors are made (the backends), by the CLI's logging filter (:class:`SecretFilter`),
  when a table is written (:func:`scrub_failed_rows`) and to summaries (:func:`scrub_object`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

REDACTED = "<redacted>"

# The last word of a name says what its value is.
_SECRET_LAST_WORDS = frozenset({
    "password", "passwd", "passphrase", "secret", "secrets", "authorization", "auth", "bearer",
    "credential", "credentials", "cookie", "apikey",
})
# "...key" is a secret after these words (api_key, private_key, x-api-key), not alone (sort_key, key_column)
_KEY_QUALIFIERS = frozenset({"api", "private", "secret", "access", "auth", "signing", "encryption", "client",
                             "master", "session", "license", "account", "service"})
# "...token" is a credential (hf_token, access_token, api_token, token) except a vocabulary token
_VOCABULARY_TOKENS = frozenset({"eos", "bos", "pad", "unk", "sep", "cls", "mask", "stop", "start", "end", "special",
                                "image", "video", "audio", "placeholder", "think", "vocab", "step", "first", "last",
                                "next", "decoder", "new", "chat", "system", "user", "assistant", "tool"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# the shortest environment value that is scrubbed as a secret ("x", "EMPTY" or "1" would blank out ordinary text)
MIN_SECRET_CHARS = 8


@lru_cache(maxsize=4096)
def is_secret_name(name: Any) -> bool:
    """True when a config key or environment variable named ``name`` holds a secret (see the module doc)."""
    words = [w.lower() for w in _WORDS.findall(str(name))]
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_LAST_WORDS:
        return True
    if last == "pwd":  # DB_PWD is a password; PWD alone is the shell's working directory
        return len(words) > 1
    if last == "key":
        return len(words) > 1 and words[-2] in _KEY_QUALIFIERS
    if last == "token":
        return len(words) == 1 or words[-2] not in _VOCABULARY_TOKENS
    return False


_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*=(.*)$", re.DOTALL)


def redact_secrets(config: Any) -> Any:
    """``config`` with the values of secret keys replaced by ``"<redacted>"`` (recursively).

    Also redacted: ``NAME=VALUE`` strings with a secret NAME (``--engine-option api_key=...``),
    and secrets inside any other string (:func:`scrub_secrets`). Everything else is kept
    as it is, so it can be recorded, compared and hashed.
    """
    if isinstance(config, Mapping):
        return {k: (REDACTED if is_secret_name(k) and v is not None else redact_secrets(v)) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact_secrets(v) for v in config]
    if isinstance(config, str):
        assignment = _ASSIGNMENT.match(config)
        if assignment and is_secret_name(assignment.group(1)) and assignment.group(2).strip():
            return f"{assignment.group(1)}={REDACTED}"
        return scrub_secrets(config)
    return config


# Text shaped like a credential, whatever variable it came from.
_SHAPES = [
    # Authorization: Bearer x / 'authorization': 'Basic x' (the scheme and its value)
    (re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"),
     r"\1" + REDACTED),
    (re.compile(r"\b([Bb]earer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (re.compile(r"(?<![\w-])sk-[A-Za-z0-9_-]{16,}"), REDACTED),  # OpenAI, Anthropic (sk-ant-...), vLLM keys
    (re.compile(r"(?<![\w-])hf_[A-Za-z0-9]{20,}"), REDACTED),  # Hugging Face
    (re.compile(r"(?<![\w-])gh[pousr]_[A-Za-z0-9]{30,}"), REDACTED),  # GitHub
    (re.compile(r"(?<![\w-])xox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),  # Slack
    (re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}"), REDACTED),  # Google
    (re.compile(r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![A-Z0-9])"), REDACTED),  # AWS access key id
    # api_key=..., "hf_token": "...", password: ... (in URLs, JSON, repr'd dicts, messages)
    (re.compile(r"(?i)\b((?:[a-z0-9]+[_-])*(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|api[_-]?token|"
                r"hf[_-]?token|token|password|passwd|secret|client[_-]?secret)[\"']?\s*[=:]\s*[\"']?)"
                r"[^\s\"'&,;)}\]]{4,}"), r"\1" + REDACTED),
]


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret environment variables (``OPENAI_API_KEY``, ``HF_TOKEN``, ...), longest first."""
    environ = os.environ if environ is None else environ
    values = {v.strip() for k, v in environ.items() if v and is_secret_name(k)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def scrub_secrets(text: Any, *, extra: Iterable[str | None] = (), environ: Mapping[str, str] | None = None) -> Any:
    """``text`` with every secret replaced by ``"<redacted>"``: the values of secret environment
    variables, the ``extra`` values given (a backend's own key) and anything shaped like a key.

    Anything that is not a string (None, a number) comes back unchanged.
    """
    if not isinstance(text, str) or not text:
        return text
    values = secret_values(environ)
    values += [v for v in extra if v and len(v) >= 4 and v not in values]
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


def scrub_object(value: Any) -> Any:
    """Every string in ``value`` (dicts, lists, tuples: a summary) scrubbed; the structure kept."""
    if isinstance(value, str):
        return scrub_secrets(value)
    if isinstance(value, Mapping):
        return {k: scrub_object(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_object(v) for v in value]
    return value


def scrub_failed_rows(df: Any, columns: Iterable[str] | None = None) -> Any:
    """A DataFrame whose error rows (``error`` not null) have every string cell scrubbed (lists of strings
    too); ``df`` itself when no row failed. The last line of defence before a table is written."""
    import pandas as pd

    if "error" not in df.columns:
        return df
    failed = df["error"].notna().to_numpy()
    if not failed.any():
        return df
    df = df.copy()
    for column in columns if columns is not None else df.columns:
        values = df[column].tolist()
        if not any(isinstance(v, (str, list, tuple)) or type(v).__name__ == "ndarray"
                   for v, bad in zip(values, failed) if bad):
            continue
        df[column] = pd.Series([_scrub_cell(v) if bad else v for v, bad in zip(values, failed)], index=df.index,
                               dtype=object)
    return df


def _scrub_cell(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_secrets(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [scrub_secrets(v) for v in value]
    return value


class SecretFilter(logging.Filter):
    """Scrubs every record it sees (message, arguments, traceback, stack); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


_formatter = logging.Formatter()


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub a log record in place: its message (formatted with its arguments), traceback and stack."""
    if getattr(record, "_stepdata_scrubbed", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is logging's own error to report
        return record
    clean = scrub_secrets(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        text = _formatter.formatException(record.exc_info)
        if scrub_secrets(text) != text:  # else the handler's own formatter renders it, as always
            record.exc_text = scrub_secrets(text)
    elif record.exc_text:
        record.exc_text = scrub_secrets(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub_secrets(record.stack_info)
    record._stepdata_scrubbed = True
    return record


_installed = False


def install_secret_filter() -> None:
    """Scrub every log record of this process and every traceback it prints (the CLI calls it first thing).

    The filter goes on the root logger's handlers, and a record factory applies it to records of every
    logger (an engine's own handlers included, and handlers added later). An uncaught exception's
    traceback is scrubbed too. Calling it again changes nothing.
    """
    global _installed
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(make_record(*args, **kwargs))

    logging.setLogRecordFactory(scrubbed_record)
    previous_hook = sys.excepthook

    def scrubbed_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if previous_hook is not sys.__excepthook__:
            return previous_hook(kind, value, tb)
        sys.stderr.write(scrub_secrets("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = scrubbed_excepthook
