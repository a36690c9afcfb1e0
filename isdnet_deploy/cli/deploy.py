"""``isdnet-deploy deploy`` (a recipe from checkpoint to engine) and ``isdnet-deploy
recipes`` (what recipes there are, and one of them resolved)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import IsdnetError
from .common import SIZE, check_json_path, json_option, printable, progress_option, write_json


def _usage(exc: IsdnetError) -> click.UsageError:
    return click.UsageError(exc.for_cli())


@click.command("deploy")
@click.argument("checkpoint", required=False)
@click.option("--recipe", "recipe_name", required=True, metavar="NAME|FILE.toml",
              help="A shipped recipe (see 'isdnet-deploy recipes') or a recipe file.")
@click.option("-o", "--output", required=True, metavar="DIR",
              help="Folder for the artifacts and manifest.json (created when missing); "
                   "rerunning into it resumes from the last good step.")
@click.option("--calib", type=click.Path(), default=None, metavar="DIR",
              help="Images to calibrate INT8 on (or to verify FP16 on); without it INT8 "
                   "calibrates on seeded synthetic images, loudly warned.")
@click.option("--size", type=SIZE, default=None,
              help="Set every size in the recipe to HxW: a quick run (e.g. CI) of the whole "
                   "chain.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one recipe key for this run (repeatable), e.g. "
                   "--set precision.min_agreement=0.995.")
@json_option("the manifest")
@progress_option
def deploy_command(checkpoint: str | None, recipe_name: str, output: str, calib: str | None,
                   size: tuple[int, int] | None, overrides: tuple[str, ...],
                   json_path: str | None, no_progress: bool) -> None:
    """Run a deploy recipe: export -> verify -> precision -> verify -> TensorRT engine
    (when TensorRT is installed) -> short benchmark against PyTorch; writes every artifact
    and manifest.json into DIR.

    Without CHECKPOINT the model has random weights (warned): fine for timing, useless for
    predictions. A failed step leaves no manifest; the same command resumes from the last
    good artifact (checked by sha256).

    Example: isdnet-deploy deploy isdnet_deepglobe.pth --recipe deepglobe-tensorrt-fp16 -o out/
    """
    from ..deploy.chain import check_inputs, deploy
    from ..deploy.recipe import load_recipe, parse_override, recipe_path
    from .common import show_progress

    try:  # what the command line names must exist and parse: usage errors
        path = recipe_path(recipe_name)
        for text in overrides:
            parse_override(text)
    except IsdnetError as exc:
        raise _usage(exc) from None
    recipe = load_recipe(str(path), overrides, size=None if size is None else
                         f"{size[0]}x{size[1]}")
    json_file = check_json_path(json_path)
    check_inputs(checkpoint, output, calib)
    if not checkpoint:
        click.secho("WARNING: no CHECKPOINT given: deploying RANDOM weights; predictions are "
                    "meaningless, timings are real.", fg="yellow", bold=True, err=True)

    def echo(line: str) -> None:
        click.echo(printable(line), err=json_file == "-")

    result = deploy(recipe, checkpoint, output, calib=calib,
                    progress=show_progress(no_progress), echo=echo)
    echo(f"wrote {result.folder / 'manifest.json'}; rerun or resume with: "
         f"{result.manifest['command']}")
    write_json(json_file, result.manifest)


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists read the same in TOML


def _resolved_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, keys in data.items():
        if not isinstance(keys, dict):
            continue
        lines += ["", f"[{section}]"]
        lines += [f"# {k}: unset" if v is None else f"{k} = {_toml_value(v)}"
                  for k, v in keys.items()]
    return lines


@click.command("recipes")
@click.option("--show", default=None, metavar="NAME|FILE.toml",
              help="Print one recipe as resolved: every key, defaults and derived values "
                   "filled in.")
@json_option("the recipes (or the one shown)")
def recipes_command(show: str | None, json_path: str | None) -> None:
    """List the deploy recipes with one line each, or show one resolved.

    Example: isdnet-deploy recipes --show deepglobe-tensorrt-fp16
    """
    from ..deploy.recipe import RECIPES_DIR, describe_recipes, load_recipe, recipe_path

    json_file = check_json_path(json_path)
    if show is not None:
        try:
            path = recipe_path(show)
        except IsdnetError as exc:
            raise _usage(exc) from None
        recipe = load_recipe(str(path))
        if json_file != "-":
            click.echo(printable(f"# {recipe.name} ({recipe.source}), as resolved"))
            for line in _resolved_lines(recipe.data):
                click.echo(printable(line))
        write_json(json_file, {"name": recipe.name, "source": recipe.source,
                               "resolved": recipe.data})
        return
    rows = describe_recipes()
    if json_file != "-":
        width = max((len(name) for name, _ in rows), default=0)
        for name, description in rows:
            click.echo(printable(f"{name:<{width}}  {description}"))
        click.echo(printable(f"(from {RECIPES_DIR}; a recipe file of your own works too: "
                             "--recipe FILE.toml)"))
    write_json(json_file, {"recipes": [{"name": n, "description": d} for n, d in rows]})
