"""``stepdata annotate``: people as localizers. A page (or Label Studio tasks) to mark first wrong steps."""

from __future__ import annotations

import click

from stepdata.commands.stages import data_dir_option


@click.command("annotate")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="The page to write (.html), or with --format label-studio the tasks (.json; the labelling "
                   "config goes beside it as OUT.label_config.xml).")
@click.option("--format", "fmt", type=click.Choice(["html", "label-studio"]), default="html", show_default=True,
              help="html: one self-contained page (no server, no network); label-studio: tasks and a labelling "
                   "config to import into Label Studio.")
@click.option("--problems", "problems_source",
              help="Problems table or data set for the questions and gold answers (default: the one SOURCE records).")
@data_dir_option
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["error", "no_error", "unknown", "unfinished"]),
              help="Only the solutions a localizer gave this status (SOURCE a localized table; repeatable), "
                   "e.g. --status unknown for the ones it could not place.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N solutions.")
@click.option("--title", help="The page's title.")
def annotate_cmd(source: str, out: str, fmt: str, problems_source: str | None, data_dir: str | None,
                 statuses: tuple[str, ...], limit: int | None, title: str | None) -> None:
    """Write a page where a person marks the first wrong step of each wrong solution in SOURCE.

    SOURCE is a localized table (or the rollouts table it was made from: its wrong rollouts).
    On the page a person clicks each solution's first wrong step (steps numbered from 1), or
    "No error" / "Can't tell", and may type the corrected step; progress stays in the browser,
    and "Save labels" downloads a JSON lines file. Then:

    \b
      stepdata localize SOURCE --method human --labels labels.jsonl --out localized_human.parquet
      stepdata pairs from-corrections localized_human.parquet --out pairs_human.parquet

    With --format label-studio, OUT is Label Studio tasks (and OUT.label_config.xml its labelling
    config); `--labels` then reads Label Studio's JSON export of the project.
    """
    from stepdata.annotate.source import load_items
    from stepdata.pipeline.lineage import lineage_of, load_lineage_problems

    try:
        reference = lineage_of(source).get("problems")
        try:
            problems = load_lineage_problems(reference, data_dir, given=problems_source, needed_by="annotate")
        except FileNotFoundError:
            if problems_source is not None:
                raise
            problems = None  # the page says so and shows each solution's prompt instead
        annotation = load_items(source, problems, statuses=statuses, limit=limit)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not annotation.items:
        raise click.ClickException(f"{source}: no wrong solution with steps to annotate "
                                   f"({annotation.total} wrong solutions; left out: {annotation.left_out or 'none'})")
    for note in annotation.notes:
        click.echo(f"note: {note}", err=True)
    shown = f"{len(annotation.items)} of {annotation.total} wrong solutions"
    if fmt == "label-studio":
        from stepdata.annotate.label_studio import write_tasks

        tasks, config = write_tasks(annotation, out)
        click.echo(f"wrote {shown} as Label Studio tasks to {tasks} and the labelling config to {config} (table "
                   f"fingerprint {annotation.fingerprint}); import its JSON export with `stepdata localize {source} "
                   "--method human --labels EXPORT.json`")
        return
    from stepdata.annotate.page import write_page

    path = write_page(annotation, out, title)
    click.echo(f"wrote the annotation page for {shown} to {path} (table fingerprint {annotation.fingerprint}); "
               f"open it in a browser, then `stepdata localize {source} --method human --labels LABELS.jsonl`")
