"""Deploy recipes: the shipped ones validate, every key is documented, and a wrong key or
value is refused in one line naming the key and what it allows (no model is built here)."""

from __future__ import annotations

import re

import pytest

from isdnet_deploy.deploy.recipe import (
    RECIPES_DIR,
    SCHEMA,
    load_recipe,
    parse_override,
    recipe_names,
)
from isdnet_deploy.errors import IsdnetError

NAMED_IN_ISSUE = ("deepglobe-onnxruntime-cpu-fp32", "deepglobe-onnxruntime-cpu-int8",
                  "deepglobe-tensorrt-fp16", "deepglobe-tensorrt-int8", "inria-tensorrt-fp16",
                  "cityscapes-tensorrt-fp16", "deepglobe-c-embedding")


def refusal(name: str = "deepglobe-tensorrt-fp16", overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(IsdnetError) as caught:
        load_recipe(name, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_recipes_the_issue_names_are_shipped() -> None:
    assert set(NAMED_IN_ISSUE) <= set(recipe_names())
    assert RECIPES_DIR.name == "export" and RECIPES_DIR.parent.joinpath("setup.cfg").is_file()


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_validates(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    for section, keys in SCHEMA.items():
        data = recipe.data[section] if section else recipe.data
        assert set(keys) <= set(data), section
    bench = recipe["benchmark"]["size"]
    assert bench == recipe["export"]["size"] or recipe["export"]["size"] is None


def test_the_shipped_targets_are_what_their_names_say() -> None:
    inria = load_recipe("inria-tensorrt-fp16")
    assert (inria["engine"]["opt"], inria["engine"]["max"]) == ("4000x4000", "5000x5000")
    city = load_recipe("cityscapes-tensorrt-fp16")
    assert city.static and city["export"]["size"] == city["verify"]["size"] == "1024x2048"
    embed = load_recipe("deepglobe-c-embedding")
    assert (embed["export"]["input"], embed["export"]["output"],
            embed["export"]["labels_dtype"], embed["engine"]["target"]) == (
        "uint8", "labels", "uint8", "none")
    for name in ("deepglobe-tensorrt-int8", "deepglobe-onnxruntime-cpu-int8"):
        recipe = load_recipe(name)
        assert recipe["precision"]["mode"] == "int8"
        assert recipe["precision"]["int8_target"] == ("cpu" if "cpu" in name else "tensorrt")
        assert recipe.builds_engine == ("tensorrt" in name)


def test_every_key_is_documented_in_the_export_readme() -> None:
    text = (RECIPES_DIR / "README.md").read_text()
    for section, keys in SCHEMA.items():
        if section:
            assert f"`[{section}]`" in text
        for key in keys:
            assert re.search(rf"^\| `{key}` \|", text, re.M), f"{section}.{key} undocumented"


@pytest.mark.parametrize("override, fragments", [
    ("export.pyramid=grap", ["export.pyramid = 'grap'", "one of: graph, external"]),
    ("export.pyramd=graph", ["unknown key export.pyramd", "pyramid, input, output"]),
    ("exprt.size=64", ["unknown section", "export, verify, precision"]),
    ("verify.size=16x16", ["verify.size", "sides from 32 to 16384"]),
    ("verify.atol=-1", ["verify.atol", "a number >= 0"]),
    ("precision.min_agreement=1.5", ["precision.min_agreement", ">= 0 <= 1"]),
    ("engine.opt_level=9", ["engine.opt_level", "an integer >= 0 <= 5"]),
    ("export.simplify=yes", ["export.simplify", "true or false"]),
    ("precision.mode=int4", ["precision.mode", "fp32, fp16, int8"]),
    ("verify.inputs=2.5", ["verify.inputs", "an integer >= 1"]),
    ("benchmark.size", ["is not KEY=VALUE"]),
])
def test_a_bad_override_names_the_key_and_the_allowed_values(override, fragments) -> None:
    with pytest.raises(IsdnetError) as caught:
        parse_override(override)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("name, overrides, fragments", [
    ("deepglobe-onnxruntime-cpu-fp32", ("export.shapes=static",),
     ['export.shapes = "static" needs export.size']),
    ("deepglobe-onnxruntime-cpu-fp32", ("export.size=64x64",), ["export.size fixes"]),
    ("cityscapes-tensorrt-fp16", ("verify.size=512x512",),
     ["verify.size", "cannot differ from export.size"]),
    ("cityscapes-tensorrt-fp16", ("engine.opt=512x1024",), ["engine.opt", "static"]),
    ("deepglobe-tensorrt-fp16", ("export.output=labels",),
     ["engine.target", "output_resize"]),
    ("deepglobe-tensorrt-int8", ("precision.int8_target=cpu",), ["int8_target"]),
    ("deepglobe-tensorrt-int8", ('precision.keep_fp32=["Resize"]',),
     ["precision.keep_fp32", "fp16"]),
    ("deepglobe-tensorrt-fp16", ("engine.min=2000x2000",), ["engine.min", "engine.opt"]),
    ("deepglobe-tensorrt-fp16", ("engine.device=gpu",), ["engine.device", "cuda:N"]),
    ("deepglobe-onnxruntime-cpu-fp32", ("engine.opt=512x512",),
     ["engine.min/opt/max", "engine.target"]),
])
def test_keys_that_contradict_each_other_are_named(name, overrides, fragments) -> None:
    message = refusal(name, overrides)
    assert message.startswith(f"recipe {name}: ")
    for fragment in fragments:
        assert fragment in message


def test_a_users_recipe_file_is_checked_the_same_way(tmp_path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('description = "mine"\nprofile = "inria"\n[export]\nshapes = "static"\n'
                    'size = "512x768"\n[precision]\nmode = "fp16"\n')
    recipe = load_recipe(str(mine))
    assert recipe.name == "mine" and recipe["verify"]["size"] == "512x768"
    assert recipe["precision"]["keep_fp32"][0] == "Resize"
    mine.write_text('description = "mine"\nprofile = "inria"\n[export]\ninputs = "float"\n')
    message = refusal(str(mine))
    assert "unknown key export.inputs" in message and "input, output" in message
    mine.write_text('profile = "mars"\ndescription = "x"\n')
    assert "profile = 'mars'" in refusal(str(mine)) and "deepglobe, inria, cityscapes" in \
        refusal(str(mine))
    mine.write_text('description = "x"\n')
    assert "profile is missing" in refusal(str(mine))
    mine.write_text('description = "x"\nprofile = "inria"\n[export\n')
    assert "is not valid TOML" in refusal(str(mine))
    assert "does not exist" in refusal(str(tmp_path / "absent.toml"))
    assert "unknown recipe 'nope'" in refusal("nope")


def test_overrides_read_toml_values_and_size_sets_every_size() -> None:
    assert parse_override("precision.min_agreement=0.5") == ("precision", "min_agreement", 0.5)
    assert parse_override('precision.keep_fp32=["Resize", "ArgMax"]')[2] == ["Resize", "ArgMax"]
    assert parse_override("verify.size=64")[2] == "64x64"
    recipe = load_recipe("deepglobe-tensorrt-int8", ("benchmark.iters=1",), size="64x96")
    sizes = [recipe["verify"]["size"], recipe["precision"]["size"], recipe["benchmark"]["size"],
             *(recipe["engine"][k] for k in ("min", "opt", "max"))]
    assert sizes == ["64x96"] * 6 and recipe["benchmark"]["iters"] == 1
    city = load_recipe("cityscapes-tensorrt-fp16", size="64x128")
    assert city["export"]["size"] == city["benchmark"]["size"] == "64x128"
    assert city["engine"]["opt"] is None


def test_cli_lists_shows_and_refuses(cli, tmp_path) -> None:
    listed = cli("recipes")
    assert listed.exit_code == 0
    for name in NAMED_IN_ISSUE:
        line = next(line for line in listed.output.splitlines() if line.startswith(name))
        assert len(line.split(None, 1)[1]) > 20  # a description follows the name
    shown = cli("recipes", "--show", "inria-tensorrt-fp16")
    assert shown.exit_code == 0 and 'opt = "4000x4000"' in shown.output
    assert "keep_fp32 = [" in shown.output
    assert cli("recipes", "--show", "nope").exit_code == 2
    out = tmp_path / "never"
    bad_set = cli("deploy", "--recipe", "deepglobe-onnxruntime-cpu-fp32", "-o", out,
                  "--set", "verify.sise=64x64")
    assert bad_set.exit_code == 2 and "unknown key verify.sise" in bad_set.output
    bad_name = cli("deploy", "--recipe", "deepglobe", "-o", out)
    assert bad_name.exit_code == 2 and "the shipped recipes are" in bad_name.output
    mine = tmp_path / "mine.toml"
    mine.write_text('description = "x"\nprofile = "inria"\n[engine]\ntarget = "onnx"\n')
    bad_file = cli("deploy", "--recipe", mine, "-o", out)  # the file is wrong, not the line
    assert bad_file.exit_code == 1
    assert bad_file.output.strip().splitlines()[-1] == (
        "error: recipe mine: engine.target = 'onnx' is not allowed; it takes one of: none, "
        "tensorrt")
    assert not out.exists()
