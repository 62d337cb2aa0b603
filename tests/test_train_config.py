"""Recipes: every YAML under recipes/ parses against its entry point; bad fields and combinations fail in one line."""

from pathlib import Path

import pytest
import yaml

from cxrlm.errors import ConfigError
from cxrlm.train.config import GRPORecipe, SFTRecipe, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
REQUIRED = ["model=m", "train_file=t.jsonl", "output_dir=o"]


def recipe_class(path: Path):
    return {"sft": SFTRecipe, "grpo": GRPORecipe}[path.parent.name]


@pytest.mark.parametrize("path", sorted(p for p in RECIPES.rglob("*.yaml") if p.parent.name in ("sft", "grpo")),
                         ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_parses(path):
    recipe = load_recipe(path, recipe_class(path))
    assert recipe.output_dir and recipe.train_file and recipe.model


def test_there_are_recipes_for_both_methods_and_models():
    names = {str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml")}
    assert {"cxrlm-tiny/sft/default.yaml", "cxrlm-tiny/grpo/default.yaml", "nv-reason-cxr-3b/sft/lora.yaml",
            "nv-reason-cxr-3b/grpo/default.yaml"} <= names


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_launch_configs_are_accelerate_configs(name):
    config = yaml.safe_load((RECIPES / "launch" / f"{name}.yaml").read_text())
    assert config["distributed_type"] in ("MULTI_GPU", "DEEPSPEED", "FSDP")
    assert config["num_processes"] == 8 and config["num_machines"] == 1


def test_overrides_are_parsed_as_yaml():
    recipe = load_recipe(None, GRPORecipe, REQUIRED + ["max_steps=3", "learning_rate=1e-5", "rewards=[format]",
                                                        "reward_kwargs={format: {tasks: [reason]}}"])
    assert recipe.max_steps == 3 and recipe.learning_rate == 1e-5 and recipe.rewards == ["format"]
    assert recipe.reward_kwargs == {"format": {"tasks": ["reason"]}}


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: a\ntrain_file: t\noutput_dir: o\nmax_steps: 5\n")
    assert load_recipe(path, SFTRecipe, ["max_steps=7"]).max_steps == 7


@pytest.mark.parametrize("overrides, message", [
    (["lerning_rate=1"], "unknown field 'lerning_rate'.*did you mean 'learning_rate'"),
    (["max_steps=ten"], "'max_steps' must be int"),
    (["use_peft=maybe"], "'use_peft' must be bool"),
    (["learning_rate=0"], "learning_rate must be > 0"),
    (["dataloader_num_workers=-1"], "dataloader_num_workers must be >= 0"),
    (["dtype=fp8"], "dtype must be one of"),
    (["load_in_4bit=true"], "set use_peft=true"),
    (["max_length=0"], "max_length must be > 0"),
    (["min_pixels=1000", "max_pixels=10"], "min_pixels <= max_pixels"),
    (["noequals"], "is not key=value"),
])
def test_bad_sft_recipes(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, SFTRecipe, REQUIRED + overrides)


@pytest.mark.parametrize("overrides, message", [
    (["rewards=[]"], "rewards is empty"),
    (["rewards=[formatt]"], "unknown reward 'formatt'"),
    (["rewards=[format, format]"], "listed twice"),
    (["reward_weights=[1, 2, 3]"], "reward_weights has 3 values for 2 rewards"),
    (["reward_kwargs={box_iou: {}}"], "reward_kwargs sets 'box_iou'"),
    (["num_generations=1"], "num_generations must be >= 2"),
    (["vllm_mode=remote"], "vllm_mode must be one of"),
    (["scale_rewards=maybe"], "scale_rewards must be"),
])
def test_bad_grpo_recipes(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, GRPORecipe, REQUIRED + overrides)


def test_missing_required_field_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no `model`"):
        load_recipe(None, SFTRecipe, ["train_file=t", "output_dir=o"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml", SFTRecipe)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(bad, SFTRecipe)
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad, SFTRecipe)


@pytest.fixture
def cli(monkeypatch):
    """`cxrlm` with only the train verb, so these tests do not depend on the other verbs' modules."""
    import cxrlm.cli

    from cxrlm.cli import train as verb
    monkeypatch.setattr(cxrlm.cli, "verb_modules", lambda: (verb,))
    return cxrlm.cli.main


def test_cli_prints_the_resolved_recipe(cli, capsys):
    main = cli

    path = RECIPES / "cxrlm-tiny" / "grpo" / "default.yaml"
    assert main(["train", "grpo", "--recipe", str(path), "--print-recipe", "max_steps=4"]) == 0
    assert '"max_steps": 4' in capsys.readouterr().out


def test_cli_reports_recipe_errors_in_one_line(cli, capsys):
    main = cli

    assert main(["train", "sft", "bogus=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "unknown field 'bogus'" in err and "\n" not in err
