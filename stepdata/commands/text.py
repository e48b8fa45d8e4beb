"""Commands on one piece of text: ``check``, ``extract``, ``split`` and ``prompts``.

Each runs one of the library's text rules (answer checking, answer extraction, step splitting,
prompt templates) on what the user types, to see what the pipeline will make of it.
"""

from __future__ import annotations

import json

import click

from stepdata.answers import AnswerCheckConfig, check_answer, extract_answer
from stepdata.commands.common import read_text_arg
from stepdata.prompts import list_prompts, load_prompt, prompts_dir
from stepdata.steps import split_steps


@click.command("check")
@click.argument("gold")
@click.argument("pred")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds before a check gives up.")
@click.option("--no-fast-path", is_flag=True, help="Send even plain numbers to Math-Verify.")
def check_cmd(gold: str, pred: str, timeout: float, no_fast_path: bool) -> None:
    """Say whether answer PRED equals gold answer GOLD (gold first)."""
    verdict = check_answer(gold, pred, AnswerCheckConfig(timeout=timeout, fast_path=not no_fast_path))
    click.echo(json.dumps({"match": verdict.match, "status": verdict.status, "path": verdict.path,
                           "detail": verdict.detail}))


@click.command("extract")
@click.argument("text")
@click.option("--no-last-number", is_flag=True, help="Do not fall back to the last number in the text.")
def extract_cmd(text: str, no_last_number: bool) -> None:
    """Print the final answer stated in TEXT ('-' reads standard input)."""
    answer = extract_answer(read_text_arg(text), last_number_fallback=not no_last_number)
    if answer is None:
        raise click.ClickException("no answer found")
    click.echo(answer)


@click.command("split")
@click.argument("text")
@click.option("--mode", type=click.Choice(["auto", "markers", "paragraphs", "lines"]), default="auto", show_default=True)
def split_cmd(text: str, mode: str) -> None:
    """Print the steps of TEXT ('-' reads standard input) as a JSON list."""
    click.echo(json.dumps(split_steps(read_text_arg(text), mode), indent=2, ensure_ascii=False))


@click.command("prompts")
@click.argument("name", required=False)
def prompts_cmd(name: str | None) -> None:
    """List the shipped prompt templates, or print template NAME."""
    if name is None:
        click.echo(f"templates in {prompts_dir()}:")
        for item in list_prompts():
            click.echo(f"  {item}")
        return
    try:
        template = load_prompt(name)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    for role, text in template.messages:
        click.echo(f"[{role}]\n{text}")
