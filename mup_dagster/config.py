"""Run configuration built from the core's recipes: every default is declared once, in
``mup_core``; a Dagster ``Config`` takes its fields, types, defaults and descriptions
from a core dataclass instance and adds only what belongs to the asset.

    class JudgeConfig(config_from(JUDGE_RECIPE)):
        rows: int = 800                      # the asset's own setting

    config.core()                            # -> TrainConfig with the run's values
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field, create_model

from mup_core.models.registry import DEFAULT_MODEL


class CoreConfig(dg.Config):
    """A Dagster config whose fields (some of them renamed) are those of a core dataclass."""

    __core__: ClassVar[type | None] = None
    __renamed__: ClassVar[dict[str, str]] = {}

    def core(self, **overrides: Any):
        """The core dataclass with this run's values (``overrides`` win)."""
        cls = type(self).__core__
        values = {}
        for f in dataclasses.fields(cls):
            name = type(self).__renamed__.get(f.name, f.name)
            if name in type(self).model_fields:
                values[f.name] = getattr(self, name)
        return cls(**{**values, **overrides})


def config_from(recipe: Any, *, exclude: tuple[str, ...] = (), rename: dict[str, str] | None = None) -> type[CoreConfig]:
    """A ``CoreConfig`` base class with one field per dataclass field of ``recipe`` (a core
    config instance): its type, the recipe's value as default and the field's ``help``
    metadata as description. ``exclude`` leaves fields at the recipe's value; ``rename``
    gives a field another name in the run config (``{"steps": "sft_steps"}``)."""
    cls = type(recipe)
    rename = dict(rename or {})
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        value = getattr(recipe, f.name)
        description = f.metadata.get("help")
        if isinstance(value, (list, dict, set)):
            field = Field(default_factory=lambda v=value: type(v)(v), description=description)
        else:
            field = Field(default=value, description=description)
        fields[rename.get(f.name, f.name)] = (hints[f.name], field)
    base = create_model(f"{cls.__name__}Fields", __base__=CoreConfig, **fields)
    base.__core__ = cls
    base.__renamed__ = rename
    return base


def default_of(func: Any, parameter: str) -> Any:
    """The default of ``parameter`` in ``func``'s signature (a core class or function), so a
    config field shows the core's default instead of a copy of it."""
    import inspect

    default = inspect.signature(func).parameters[parameter].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(func, '__qualname__', func)}: {parameter} has no default")
    return default


class Seeded(dg.Config):
    seed: int = Field(default=0, description="random seed of this asset's sampling and training")


class JudgeModel(dg.Config):
    judge_model: str = Field(default=DEFAULT_MODEL, description="base model of the judges (the `judges` partition's model)")
