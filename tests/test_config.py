"""Run configuration is built from the core's recipes: a default is declared once, in
mup_core, and a Dagster config hands the run's values back as the core dataclass."""

import dataclasses

import dagster as dg
import pytest

from mup_core.baselines.continuation import ContinuationMonitor
from mup_core.baselines.finetuned import FinetuneConfig
from mup_core.deception.policies import RLConfig
from mup_core.deception.training import JUDGE_RECIPE, SFT_RECIPE, WARMUP_RECIPE
from mup_core.models.registry import DEFAULT_MODEL
from mup_dagster.assets_deception import EvalConfig, JudgeConfig, PolicyConfig, RLAssetConfig
from mup_dagster.config import config_from, default_of
from mup_dagster.study.baselines import ContinuationConfig, FinetunedConfig


def _same(config, recipe, skip=()):
    for f in dataclasses.fields(recipe):
        if f.name not in skip:
            assert config.core().__dict__[f.name] == getattr(recipe, f.name), f.name


def test_asset_configs_default_to_the_core_recipes():
    _same(JudgeConfig(), JUDGE_RECIPE)
    _same(PolicyConfig(), SFT_RECIPE)
    _same(RLAssetConfig(), RLConfig())
    _same(FinetunedConfig(), FinetuneConfig())
    assert RLAssetConfig().warmup_steps == WARMUP_RECIPE.steps
    assert ContinuationConfig().max_new_tokens == default_of(ContinuationMonitor, "max_new_tokens")
    assert EvalConfig().judge_model == PolicyConfig().judge_model == DEFAULT_MODEL


def test_a_run_config_reaches_the_core_dataclass_renamed_and_validated():
    cfg = PolicyConfig(sft_steps=3, lr=0.5)  # `steps` of the recipe is `sft_steps` in the run config
    core = cfg.core()
    assert (core.steps, core.lr, core.lora_r) == (3, 0.5, SFT_RECIPE.lora_r)
    assert "steps" not in PolicyConfig.model_fields and "mixed_precision" not in PolicyConfig.model_fields
    assert FinetunedConfig(steps=7).core(seed=4).seed == 4  # overrides win
    # a description declared on the core field shows in the UI's config schema
    assert "every layer" in JudgeConfig.model_fields["top_layers"].description

    @dg.asset
    def a(config: PolicyConfig) -> int:
        return config.core().steps

    ok = dg.materialize([a], run_config={"ops": {"a": {"config": {"sft_steps": 5}}}})
    assert ok.output_for_node("a") == 5
    with pytest.raises(dg.DagsterInvalidConfigError, match="steps"):
        dg.materialize([a], run_config={"ops": {"a": {"config": {"steps": 5}}}})


def test_config_from_keeps_list_defaults_apart():
    @dataclasses.dataclass
    class Recipe:
        shots: list = dataclasses.field(default_factory=lambda: [0])

    Config = config_from(Recipe())
    one, two = Config(), Config()
    one.shots.append(2)
    assert two.shots == [0] and Config().core().shots == [0]
