"""Command-line flags built from the settings tree (datagen/run/options.py).

Each field that carries a `Flag` becomes one typer option: its name, type, default, range, help and help panel
all come from the field, so a new setting is one field there and nothing here. A field holding a settings model
of its own (GenerateSettings.ray) brings that model's flags beside its own.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

import typer
from annotated_types import Ge, Le
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from datagen.run.options import PANELS, Flag, flag_of


def settings_flags(model: type[BaseModel]) -> list[inspect.Parameter]:
    """The model's flags as keyword parameters for typer, grouped panel by panel in PANELS' order."""
    params: list[inspect.Parameter] = []
    for name, field in model.model_fields.items():
        flag = flag_of(model, name)
        if flag is None:
            continue
        params.append(_parameter(name, field, flag))
        nested = _settings_model(field.annotation)
        if nested is not None:
            params.extend(settings_flags(nested))
    return sorted(params, key=lambda param: PANELS.index(param.default.rich_help_panel))


def settings_from_flags(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """The model the flags' values describe; a flag left at its command-line default of None leaves the field's own."""
    data = {}
    for name, value in values.items():
        flag = flag_of(model, name) if name in model.model_fields else None
        if flag is not None and flag.invert:
            value = not value
        if flag is not None and flag.cli_type is not None and value is None:
            continue
        data[name] = value
    return model(**data)


def takes_settings(model: type[BaseModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command `model`'s flags after its own parameters; it is called with `settings`, the model they make.

    Its own parameters are those of its signature other than `settings`: positional arguments, and flags that are
    not settings of a run (how to print, where to write a summary)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [param for param in inspect.signature(command, eval_str=True).parameters.values() if param.name != "settings"]
        flags = settings_flags(model)
        names = {param.name for param in own}

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            kept = {name: values.pop(name) for name in list(values) if name in names}
            return command(settings=settings_from_flags(model, values), **kept)

        wrapper.__signature__ = inspect.Signature([*own, *flags])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {param.name: param.annotation for param in [*own, *flags]}
        return wrapper

    return decorate


def _parameter(name: str, field: FieldInfo, flag: Flag) -> inspect.Parameter:
    annotation = flag.cli_type if flag.cli_type is not None else field.annotation
    default: Any
    if flag.invert:
        default = False
    elif field.is_required():
        default = ...
    elif flag.cli_type is not None:
        default = [] if get_origin(flag.cli_type) is list else flag.cli_default
    else:
        default = field.get_default(call_default_factory=True)
    shown = flag.shown_default or _shown(field.get_default(call_default_factory=True)) if not field.is_required() else None
    bounds = {"min": next((item.ge for item in field.metadata if isinstance(item, Ge)), None),
              "max": next((item.le for item in field.metadata if isinstance(item, Le)), None)}
    if flag.argument:
        option = typer.Argument(default, help=flag.help, rich_help_panel=flag.panel, show_default=shown if isinstance(shown, str) else True)
    else:
        option = typer.Option(
            default,
            *flag.decls,
            help=flag.help,
            rich_help_panel=flag.panel,
            show_default=shown if isinstance(shown, str) else not flag.invert,
            metavar="" if annotation is bool else None,  # a switch takes no value
            **{key: value for key, value in bounds.items() if value is not None},
        )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _shown(default: object) -> str | bool:
    """A list default as the command line writes it ("a,b"); other defaults as typer shows them."""
    if isinstance(default, list) and default:
        return ",".join(map(str, default))
    return True


def _settings_model(annotation: Any) -> type[BaseModel] | None:
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((option for option in options if isinstance(option, type) and issubclass(option, BaseModel)), None)
