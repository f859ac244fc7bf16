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
from typer.core import TyperGroup, TyperOption
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from datagen.run.options import PANELS, Flag, flag_of


def settings_flags(model: type[BaseModel]) -> list[inspect.Parameter]:
    """The model's flags as keyword parameters for typer, grouped panel by panel in PANELS' order."""
    params: list[inspect.Parameter] = []
    for name, field in model.model_fields.items():
        flag = flag_of(model, name)
        if flag is not None:
            params.append(_parameter(name, field, flag))
        nested = _settings_model(field.annotation)
        if nested is not None:  # its flags beside the model's own; the model's validator nests their values
            params.extend(settings_flags(nested))
    return in_panel_order(params)


def in_panel_order(params: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """Arguments and flags outside any panel first, then panel by panel in PANELS' order (help shows them so)."""
    return sorted(params, key=lambda param: PANELS.index(param.default.rich_help_panel) if param.default.rich_help_panel in PANELS else -1)


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
        own = [param.replace(kind=inspect.Parameter.KEYWORD_ONLY) for param in inspect.signature(command, eval_str=True).parameters.values()
               if param.name != "settings"]
        flags = settings_flags(model)
        names = {param.name for param in own}

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            kept = {name: values.pop(name) for name in list(values) if name in names}
            return command(settings=settings_from_flags(model, values), **kept)

        wrapper.__signature__ = inspect.Signature(in_panel_order([*own, *flags]))  # type: ignore[attr-defined]
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
    elif field.default_factory is not None:
        default = _Deferred(field, flag)
    elif flag.cli_default is not None:
        default = flag.cli_default
    elif flag.cli_type is not None:
        default = [] if get_origin(flag.cli_type) is list else None
    else:
        default = field.get_default(call_default_factory=True)
    bounds = {"min": next((item.ge for item in field.metadata if isinstance(item, Ge)), None),
              "max": next((item.le for item in field.metadata if isinstance(item, Le)), None)}
    if flag.argument:
        option = typer.Argument(default, help=flag.help, show_default=flag.shown_default or True)  # in typer's Arguments panel
    else:
        option = typer.Option(
            default,
            *flag.decls,
            help=flag.help,
            rich_help_panel=flag.panel,
            show_default=flag.shown_default or not flag.invert,
            metavar="" if annotation is bool else None,  # a switch takes no value
            **{key: value for key, value in bounds.items() if value is not None},
        )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


class _Deferred:
    """A default computed when a command runs or shows its own help, not when `datagen --help` lists the commands
    (the task list loads the task registry). Click calls it for the value; its help shows str() of it."""

    def __init__(self, field: FieldInfo, flag: Flag) -> None:
        self.field, self.flag = field, flag

    def __call__(self) -> Any:
        value = self.field.get_default(call_default_factory=True)
        return ",".join(map(str, value)) if self.flag.cli_type is str and isinstance(value, list) else value  # a list written "a,b"

    def __str__(self) -> str:
        return str(self())


def _settings_model(annotation: Any) -> type[BaseModel] | None:
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((option for option in options if isinstance(option, type) and issubclass(option, BaseModel)), None)


class SwitchesTakeNoValue(TyperGroup):
    """typer 0.29 shows `<bool>` beside each switch (--force, --help) as if it took a value: a group of this class
    blanks that column for the switches of every command under it, those declared by hand included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _blank_switch_values(self)


def _blank_switch_values(command: Any) -> None:
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _blank_switch_values(sub)
