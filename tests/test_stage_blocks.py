"""One shape for every stage: options generated from the Config, lineage read from the input, the
stored prompt checked per row, recipes (issue 11)."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner
from test_new_user import invoke, policy  # noqa: F401 - policy is a fixture

from cli import main
from stepdata import read_metadata, read_table, write_table
from stepdata.commands import stages
from stepdata.pipeline.localize import LocalizeConfig
from stepdata.pipeline.rectify import RectifyConfig
from stepdata.pipeline.sample import SampleConfig
from stepdata.pipeline.synthesize import SynthesizeConfig
from stepdata.recipe import RecipeError, load_recipe


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("command, config", [(stages.sample_cmd, SampleConfig), (stages.localize_cmd, LocalizeConfig),
                                             (stages.rectify_cmd, RectifyConfig),
                                             (stages.synthesize_cmd, SynthesizeConfig)])
def test_every_config_field_is_an_option_with_the_configs_default(command, config):
    params = {p.name: p for p in command.params}
    for field in dataclasses.fields(config):
        assert field.name in params, f"{command.name} has no option for {config.__name__}.{field.name}"
        assert params[field.name].default == field.default, field.name
        assert params[field.name].help == field.metadata["help"], field.name


def test_a_config_default_changes_the_option(monkeypatch):
    """The option is made from the field: a changed default is what --help shows, with nothing else edited."""
    from stepdata.commands.config_options import config_options

    @dataclasses.dataclass(frozen=True)
    class Toy:
        rounds: int = dataclasses.field(default=7, metadata={"help": "How many."})
        mode: str = dataclasses.field(default="a", metadata={"help": "Which.", "choices": ("a", "b")})

    import click

    @click.command()
    @config_options(Toy)
    def toy(**options):
        click.echo(repr(Toy(**options)))

    result = CliRunner().invoke(toy, ["--mode", "b"])
    assert result.output.strip() == "test_a_config_default_changes_the_option.<locals>.Toy(rounds=7, mode='b')"
    assert "[default: 7]" in CliRunner().invoke(toy, ["--help"]).output
    assert CliRunner().invoke(toy, ["--mode", "c"]).exit_code == 2


def test_later_stages_read_problems_template_and_model_from_the_lineage(runner, tmp_path, policy):  # noqa: F811 - the fixture imported above
    server, problems, engine = policy
    rollouts, localized, out = (tmp_path / f"{n}.parquet" for n in ("rollouts", "localized", "stepdpo"))
    assert invoke(runner, ["sample", problems, *engine, "--n", "2", "--out", rollouts]).exit_code == 0
    lineage = read_metadata(rollouts)["config"]["lineage"]
    assert lineage == {"problems": str(problems.resolve()), "template": "step_by_step", "model": "policy"}
    # no --problems: the exact localizer reads the problems the rollouts table records
    assert invoke(runner, ["localize", rollouts, "--method", "exact", "--out", localized]).exit_code == 0
    assert read_metadata(localized)["config"]["lineage"] == lineage
    # no --problems, --template or --model: all from the lineage (the server still needs its URL)
    done = invoke(runner, ["rectify", localized, "--backend", "openai", "--base-url", server.base_url, "--n", "2",
                           "--out", out])
    assert done.exit_code == 0, done.output
    attempts = read_table(tmp_path / "stepdpo.attempts.parquet")
    assert len(attempts) == len(read_table(localized)) and "prompt_mismatch" not in set(attempts.outcome)
    assert read_metadata(tmp_path / "stepdpo.attempts.parquet")["config"]["model"] == "policy"


def test_a_template_that_no_longer_renders_the_stored_prompt_is_reported_per_row(runner, tmp_path, policy):  # noqa: F811 - the fixture imported above
    server, problems, engine = policy
    rollouts, localized = tmp_path / "rollouts.parquet", tmp_path / "localized.parquet"
    assert invoke(runner, ["sample", problems, *engine, "--n", "2", "--out", rollouts]).exit_code == 0
    assert invoke(runner, ["localize", rollouts, "--method", "exact", "--out", localized]).exit_code == 0
    table = read_table(localized)
    assert len(table) >= 2
    # the template file was edited after sampling: its instruction is no longer the one the model saw
    edited = tmp_path / "edited.txt"
    edited.write_text("[user]\nSolve carefully.\n{{question}}\n[assistant]\nLet's think step by step.\nStep 1:")
    out = tmp_path / "edited_pairs.parquet"
    result = invoke(runner, ["rectify", localized, *engine, "--template", edited, "--n", "2", "--out", out])
    assert result.exit_code == 0, result.output
    attempts = read_table(tmp_path / "edited_pairs.attempts.parquet")
    rectifiable = attempts[attempts.outcome != "no_error_step"]
    assert len(rectifiable) and set(rectifiable.outcome) == {"prompt_mismatch"}
    assert all("template" in detail and "Solve carefully." in detail for detail in rectifiable.detail)
    # one row's stored prompt differs (its table was edited): only that row is refused
    tampered = table.copy()
    tampered.loc[0, "prompt"] = tampered.loc[0, "prompt"].replace("step by step", "quickly")
    write_table(tampered, tmp_path / "tampered.parquet", "localized", config=read_metadata(localized)["config"])
    out = tmp_path / "tampered_pairs.parquet"
    assert invoke(runner, ["rectify", tmp_path / "tampered.parquet", *engine, "--n", "2", "--out", out]).exit_code == 0
    attempts = read_table(tmp_path / "tampered_pairs.attempts.parquet").set_index("unit_id")
    first = tampered.loc[0, "rollout_id"]
    assert attempts.loc[first, "outcome"] == "prompt_mismatch" or tampered.loc[0, "status"] != "error"
    assert (attempts.drop(index=first).outcome != "prompt_mismatch").all()
    summary = read_table(tmp_path / "tampered_pairs.attempts.parquet")
    assert len(summary) == len(tampered)  # nothing dropped: the refused row is there with its outcome


def test_synthesize_checks_the_stored_prompt_too(runner, tmp_path, policy):  # noqa: F811 - the fixture imported above
    server, problems, engine = policy
    rollouts = tmp_path / "rollouts.parquet"
    assert invoke(runner, ["sample", problems, *engine, "--n", "2", "--out", rollouts]).exit_code == 0
    edited = tmp_path / "edited.txt"
    edited.write_text("[user]\nSolve carefully.\n{{question}}\n[assistant]\nLet's think step by step.\nStep 1:")
    out = tmp_path / "scdpo.parquet"
    assert invoke(runner, ["synthesize", rollouts, *engine, "--template", edited, "--out", out]).exit_code == 0
    attempts = read_table(tmp_path / "scdpo.attempts.parquet")
    assert len(attempts) and set(attempts.outcome) == {"prompt_mismatch"}


def test_a_recipe_names_what_is_wrong(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("vars: {seed: 1}\nsteps:\n  - {do: make-problems, out: p.parquet, n: 2, seed: '${seed+1}'}\n")
    assert load_recipe(str(recipe)).steps[0]["seed"] == 2
    assert load_recipe(str(recipe), {"seed": "5"}).steps[0]["seed"] == 6
    with pytest.raises(RecipeError, match="no such variable"):
        load_recipe(str(recipe), {"sed": 1})
    recipe.write_text("steps:\n  - {do: sampel, out: x.parquet}\n")
    with pytest.raises(RecipeError, match="unknown step 'sampel'"):
        load_recipe(str(recipe))
    recipe.write_text("steps:\n  - {do: make-problems, out: p.parquet, n: '${count}'}\n")
    with pytest.raises(RecipeError, match=r"unknown variable \$\{count\}"):
        load_recipe(str(recipe))


def test_a_recipe_stage_config_is_checked_by_name_and_type(runner, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"out: {tmp_path / 'run'}\nsteps:\n"
                      "  - {do: make-problems, name: problems, out: p.parquet, n: 2}\n"
                      "  - {do: sample, input: '@problems', model: m, out: r.parquet, config: {temprature: 0.5}}\n")
    result = runner.invoke(main, ["run", str(recipe)])
    assert result.exit_code != 0 and "temprature" in result.output and "steps[1] (sample).config" in result.output
    assert (tmp_path / "run" / "p.parquet").exists()  # the steps before the bad one ran and stay
