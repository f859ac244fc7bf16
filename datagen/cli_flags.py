"""Command-line flags built from the settings tree (datagen/run/options.py).

Each field that carries a `Flag` becomes one typer option: its name, type, default, range, help and help panel
all come from the field, so a new setting is one field there and nothing here. A field holding a settings model
of its own (GenerateSettings.ray) brings that model's flags beside its own.

`datagen --help` lists the commands without building their flags: a command's flags, and the settings models
(pydantic) they come from, load when that command runs or shows its own help (`built_on_use`, `takes_settings`).
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union, cast, get_args, get_origin

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from datagen.run.options import Flag


def settings_flags(model: type[BaseModel]) -> list[inspect.Parameter]:
    """The model's flags as keyword parameters for typer, grouped panel by panel in PANELS' order."""
    from datagen.run.options import flag_of

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
    from datagen.run.options import PANELS

    return sorted(params, key=lambda param: PANELS.index(param.default.rich_help_panel) if param.default.rich_help_panel in PANELS else -1)


def settings_from_flags(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """The model the flags' values describe; a flag left at its command-line default of None leaves the field's own."""
    from datagen.run.options import flag_of

    data = {}
    for name, value in values.items():
        flag = flag_of(model, name) if name in model.model_fields else None
        if flag is not None and flag.invert:
            value = not value
        if flag is not None and flag.cli_type is not None and value is None:
            continue
        data[name] = value
    return model(**data)


def takes_settings(model: type[BaseModel] | str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command `model`'s flags after its own parameters; it is called with `settings`, the model they make.

    Its own parameters are those of its signature other than `settings`: positional arguments, and flags that are
    not settings of a run (how to print, where to write a summary). `model` may be named instead (a model of
    datagen/run/options.py): it is then imported when typer builds the command, not when the module declaring the
    command loads."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        return _SettingsCommand(command, model)

    return decorate


class _SettingsCommand:
    """A command taking a settings model, whose signature (its own parameters, then the model's flags) typer reads
    when it builds the command: computed then, so declaring the command loads no model."""

    def __init__(self, command: Callable[..., Any], model: type[BaseModel] | str) -> None:
        functools.update_wrapper(self, command)
        # typer resolves string annotations through __annotations__; the signature's are resolved already.
        self.__annotations__: dict[str, Any] = {}
        self._command, self._model = command, model

    @functools.cached_property
    def model(self) -> type[BaseModel]:
        if isinstance(self._model, str):
            return cast("type[BaseModel]", getattr(importlib.import_module("datagen.run.options"), self._model))
        return self._model

    @functools.cached_property
    def __signature__(self) -> inspect.Signature:
        # `settings`' annotation names the model, which the command's module may import only for type checking.
        own = [param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for param in inspect.signature(self._command, eval_str=True, locals={self.model.__name__: self.model}).parameters.values()
               if param.name != "settings"]
        return inspect.Signature(in_panel_order([*own, *settings_flags(self.model)]))

    @functools.cached_property
    def _own(self) -> set[str]:
        return {name for name in inspect.signature(self._command).parameters if name != "settings"}

    def __call__(self, **values: Any) -> Any:
        kept = {name: values.pop(name) for name in list(values) if name in self._own}
        return self._command(settings=settings_from_flags(self.model, values), **kept)


def _parameter(name: str, field: FieldInfo, flag: Flag) -> inspect.Parameter:
    from annotated_types import Ge, Le

    annotation = flag.cli_type if flag.cli_type is not None else field.annotation
    default: Any
    if flag.invert:
        default = False
    elif field.is_required():
        default = ...
    elif field.default_factory is not None:
        default = _Deferred(functools.partial(_factory_default, field, flag))
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
    (the task list loads the task registry, a settings model loads pydantic). Click calls it for the value; its
    help shows str() of it."""

    def __init__(self, value: Callable[[], Any]) -> None:
        self.value = value

    def __call__(self) -> Any:
        return self.value()

    def __str__(self) -> str:
        return str(self())


def _factory_default(field: FieldInfo, flag: Flag) -> Any:
    value = field.get_default(call_default_factory=True)
    return ",".join(map(str, value)) if flag.cli_type is str and isinstance(value, list) else value  # a list written "a,b"


def setting_default(name: str, model: str) -> Any:
    """The default of field `name` of the settings model `model` ("package.module:Class"), for a flag declared by
    hand; read when its command runs or shows its help, so declaring the flag loads no model."""

    def value() -> Any:
        module, _, attribute = model.partition(":")
        return getattr(importlib.import_module(module), attribute).model_fields[name].get_default(call_default_factory=True)

    return _Deferred(value)


def _settings_model(annotation: Any) -> type[BaseModel] | None:
    from pydantic import BaseModel

    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((option for option in options if isinstance(option, type) and issubclass(option, BaseModel)), None)


class SwitchesTakeNoValue(TyperGroup):
    """typer 0.29 shows `<bool>` beside each switch (--force, --help) as if it took a value: a group of this class
    blanks that column for the switches of every command under it, those declared by hand included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _blank_switch_values(self)


def _blank_switch_values(command: Any) -> None:
    if isinstance(command, BuiltOnUse):
        return  # blanked when built
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _blank_switch_values(sub)


def built_on_use(app: typer.Typer, root: typer.Typer | None = None) -> None:
    """Make each command registered on `app` and its groups one that `datagen --help` lists by its name, help and
    panel, and whose flags typer builds only when it runs or shows its own help: building them loads the settings
    models. `root`, the app typer is called with, gives the building its settings (`app` itself by default)."""
    for group in app.registered_groups:
        if group.typer_instance is not None:
            built_on_use(group.typer_instance, root or app)
    for index, info in enumerate(app.registered_commands):
        callback = info.callback
        assert callback is not None  # typer's @app.command() always sets one
        listed = copy.copy(info)
        listed.name = info.name or typer.main.get_command_name(callback.__name__)
        listed.help = inspect.getdoc(callback) if info.help is None else info.help
        listed.callback = _listed_only
        listed.cls = cast("type[TyperCommand]", functools.partial(BuiltOnUse, build=functools.partial(_build, root or app, info)))
        app.registered_commands[index] = listed


def _listed_only() -> None:
    raise AssertionError("a listed command runs as the command BuiltOnUse builds")


def _build(app: typer.Typer, info: Any) -> click.Command:
    command = typer.main.get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode)
    _blank_switch_values(command)  # what SwitchesTakeNoValue does for the commands typer builds at once
    return command


class BuiltOnUse(TyperCommand):
    """A command as its group lists it; the command itself (its flags) is built when it is run or its help shown.

    `params` and `make_context` are the built command's, so a caller that runs it or reads its flags sees no
    difference; the context it runs in belongs to the built command."""

    def __init__(self, *args: Any, build: Callable[[], click.Command], **kwargs: Any) -> None:
        self._build = build
        super().__init__(*args, **kwargs)

    @functools.cached_property
    def built(self) -> click.Command:
        return self._build()

    @property  # type: ignore[override]
    def params(self) -> list[click.Parameter]:
        return self.built.params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        pass  # click's __init__ sets the listed command's (none); the built command's stand

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        return self.built.make_context(info_name, args, parent, **extra)
