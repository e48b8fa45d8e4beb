"""``eval``: score one or more models on the same problems, to see what training changed."""

from __future__ import annotations

import click

from stepdata.commands.common import (
    column_mapping,
    engine_kwargs,
    engine_options,
    make_engine,
    problem_steps_options,
)
from stepdata.commands.config_options import build_config, config_options
from stepdata.generation.calculator_decoding import CALCULATOR_HELP
from stepdata.loaders import BadRowError
from stepdata.prompts import load_prompt
from stepdata.solve import STRATEGIES, SolveConfig

# eval's own options already say these (under eval's names); the rest of SolveConfig's are offered as they are
SOLVE_SHARED = ("strategy", "template", "n", "temperature", "top_p", "max_tokens", "seed", "answer_timeout",
                "last_number_fallback", "calculator")


@click.command("eval")
@engine_options(many=True)
@click.option("--data", required=True, help="embedded[:N], gsm8k, math500, svamp, multiarith, asdiv, asdiv-a, a "
                                            "problems table or a file.")
@click.option("--split", default="test", show_default=True, help="Split of a named set (gsm8k has train and test).")
@click.option("--limit", type=int, help="Use only the first N problems.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="STEPDATA_DATA_DIR")
@click.option("--column", "columns", multiple=True, metavar="OURS=THEIRS", help="Column mapping for a --data file.")
@click.option("--seed", type=int, default=12345, show_default=True,
              help="Seed of embedded problems (held out: make training data with another seed).")
@click.option("--n-problems", type=int, default=100, show_default=True, help="How many embedded problems.")
@problem_steps_options
@click.option("--template", default="step_by_step", show_default=True, help="Prompt template (prompts/NAME.txt).")
@click.option("--n", type=int, default=1, show_default=True, help="Samples per problem (n > 1 needs --temperature > 0).")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--sampling-seed", type=int, default=0, show_default=True)
@click.option("--last-number-fallback", is_flag=True,
              help="Also read a solution's last number as its answer when it states none explicitly "
                   "(off: only \\boxed{}, 'The answer is' and '#### N' count).")
@click.option("--calculator", is_flag=True, help=CALCULATOR_HELP + " eval.json gives each model's totals.")
@click.option("--batch-size", type=int, help="Problems per engine call (default: all at once).")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="How each problem is solved (default: as the sampling options say: greedy, or n samples). "
                   "best-of-n and stepco run `stepdata solve` per model (one row per problem, resumable under --out) "
                   "with --n, --temperature, --max-tokens, --template and the options below.")
@config_options(SolveConfig, exclude=SOLVE_SHARED)
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Folder for eval.json and per-model rows (Parquet).")
def eval_cmd(models: tuple[str, ...], data: str, split: str, limit: int | None, data_dir: str | None,
             columns: tuple[str, ...], seed: int, n_problems: int, min_steps: int, max_steps: int, backend: str,
             base_url: str | None, tokenizer: str | None, engine_options: tuple[str, ...], template: str, n: int,
             temperature: float, top_p: float, max_tokens: int, sampling_seed: int, last_number_fallback: bool,
             calculator: bool, batch_size: int | None, strategy: str | None, out: str | None,
             **solve_options) -> None:
    """Score each --model on the same problems (greedy by default) and print one row per model."""
    from stepdata.evaluate import (
        evaluate_model,
        format_table,
        load_eval_problems,
        write_results,
    )
    from stepdata.generation import SamplingConfig

    if min_steps > max_steps:
        raise click.BadParameter("--min-problem-steps is larger than --max-problem-steps")
    mapping = column_mapping(columns)
    engine_kwargs(engine_options)  # refuse a bad --engine-option before the problems load
    solve_config = None
    if strategy == "greedy" and (n != 1 or temperature != 0):
        raise click.UsageError("--strategy greedy samples once at temperature 0 (drop --n and --temperature)")
    if strategy == "sample" and temperature == 0:
        raise click.UsageError("--strategy sample needs --temperature > 0")
    if strategy in ("best-of-n", "stepco"):
        solve_config = build_config(SolveConfig, solve_options, strategy=strategy, template=template, n=n,
                                    temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=sampling_seed,
                                    last_number_fallback=last_number_fallback, calculator=calculator)
    try:
        sampling = SamplingConfig(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=sampling_seed,
                                  calculator=calculator)
        problems, label = load_eval_problems(data, split=split, limit=limit, data_dir=data_dir, seed=seed,
                                             n_problems=n_problems, min_steps=min_steps, max_steps=max_steps,
                                             columns=mapping)
        load_prompt(template)
    except (ValueError, FileNotFoundError, BadRowError) as exc:
        raise click.ClickException(str(exc)) from None
    if solve_config is not None:
        from stepdata.commands.solve import eval_by_solving

        eval_by_solving(models, problems, label, solve_config, batch_size, out,
                        lambda m: make_engine(backend, m, base_url, tokenizer, engine_options))
        return
    results = []
    for model in models:
        click.echo(f"evaluating {model} on {len(problems)} problems of {label} ...", err=True)
        results.append(evaluate_model(model, problems, backend=backend, template=template, sampling=sampling,
                                      data=label, batch_size=batch_size, last_number_fallback=last_number_fallback,
                                      make_engine=lambda m: make_engine(backend, m, base_url, tokenizer, engine_options)))
    click.echo(format_table(results))
    if out:
        config = {"command": "eval", "models": list(models), "data": data, "split": split, "limit": limit,
                  "seed": seed, "n_problems": n_problems, "min_problem_steps": min_steps,
                  "max_problem_steps": max_steps,
                  "backend": backend, **({"tokenizer": tokenizer} if tokenizer else {}),
                  "template": template, "sampling": sampling.as_record(),
                  "last_number_fallback": last_number_fallback, "calculator": calculator}
        click.echo(f"wrote {write_results(results, out, config)}")
    if any(r.judged == 0 and r.samples for r in results):
        raise SystemExit(1)
