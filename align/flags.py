"""Command-line flags generated from a config dataclass, and the config rebuilt from parsed flags.

A field `max_steps: int | None = field(default=None, metadata={"help": ...})` becomes
`--max-steps INT` with that default and help; `Literal[...]` becomes `choices`; `bool` becomes
`--x/--no-x`; an optional nested dataclass (`lora: LoraSettings | None`) becomes a switch `--lora`
plus one `--lora-<field>` per field of the nested class. Adding a field to a config is the
whole job of adding a flag. Fields are grouped by the class that declares them, so `--help`
shows a method's own options apart from the shared ones. A method that cannot use a field
(`exclude`) gets no flag for it: `--help` lists only what the method takes.

`config_defaults` reads the same fields from a mapping (a `--config` YAML file) into the
parser's defaults, converted and checked as the flags are, so flags given on the command line
override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal

_SCALARS = (int, float, str)


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type, exclude: frozenset[str] = frozenset()) -> None:
    """Add one flag per field of `config_class` (a dataclass) but `exclude`, grouped by declaring class."""
    hints = typing.get_type_hints(config_class)
    for owner in reversed([c for c in config_class.__mro__ if dataclasses.is_dataclass(c)]):
        own = [f for f in dataclasses.fields(config_class)
               if _declaring_class(config_class, f.name) is owner and f.name not in exclude]
        if not own:
            continue
        group = parser.add_argument_group(owner.__name__, _first_line(owner))
        for item in own:
            nested = _nested_dataclass(hints[item.name])
            if nested is None:
                _add_scalar(group, item, hints[item.name], _flag(item.name), item.name)
            else:
                _add_nested(parser, group, item, nested)


def config_from_args(config_class: type, args: argparse.Namespace, exclude: frozenset[str] = frozenset()):
    """The config the parsed flags describe (an excluded field keeps its default); the dataclass's
    own checks raise ValueError."""
    hints = typing.get_type_hints(config_class)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config_class):
        if item.name in exclude:
            continue
        nested = _nested_dataclass(hints[item.name])
        if nested is None:
            values[item.name] = getattr(args, item.name)
        elif getattr(args, item.name):
            values[item.name] = nested(
                **{f.name: getattr(args, f"{item.name}_{f.name}") for f in dataclasses.fields(nested)}
            )
        else:
            values[item.name] = None
    return config_class(**values)


def config_defaults(parser: argparse.ArgumentParser, config_class: type, values: dict,
                    exclude: frozenset[str] = frozenset()) -> None:
    """Set the parser's defaults from `values`, keyed by field name (`max_steps` or `max-steps`); a
    nested settings field takes a mapping of its own fields (`lora: {r: 8}`) or `true`. Each value
    goes through its flag's type and choices; a problem raises ValueError naming the field."""
    fields = {f.name for f in dataclasses.fields(config_class)} - exclude
    actions = {action.dest: action for action in parser._actions}
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ValueError(f"{key}: not an option of this method (see --help)")
        if isinstance(value, dict) and _nested_dataclass(typing.get_type_hints(config_class)[name]):
            defaults[name] = True
            for sub, sub_value in value.items():
                dest = f"{name}_{str(sub).replace('-', '_')}"
                if dest not in actions:
                    raise ValueError(f"{key}.{sub}: not a field of {name}")
                defaults[dest] = _converted(actions[dest], sub_value, f"{key}.{sub}")
        else:
            defaults[name] = _converted(actions[name], value, str(key))
    parser.set_defaults(**defaults)


def _converted(action: argparse.Action, value, key: str):
    """A file's value as its flag would parse it (YAML reads `1e-5` as text, so text is converted)."""
    if action.nargs == 0:  # a switch: --x/--no-x, or --lora
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if value is None:
        return None
    if action.nargs == "*":  # a list: a YAML list, or one space-separated string
        items = value.split() if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return [_converted(_Single(action), item, key) for item in items]
    try:
        converted = action.type(value if isinstance(value, str) else str(value)) if action.type else value
    except ValueError:
        raise ValueError(f"{key}: expected {action.metavar or action.type.__name__}, got {value!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{key}: {converted!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def _add_scalar(group, item: dataclasses.Field, hint, flag: str, dest: str) -> None:
    default = item.default
    kind = _unwrap_optional(hint)
    help_text = item.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
    if kind is bool:
        group.add_argument(
            flag,
            dest=dest,
            action=argparse.BooleanOptionalAction,
            default=default,
            help=_with_default(help_text, default),
        )
        return
    options: dict[str, Any] = {}
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]: a space-separated list, empty allowed
        options["nargs"] = "*"
        kind = typing.get_args(kind)[0]
        default = list(default)
    if typing.get_origin(kind) is Literal:
        options["choices"] = typing.get_args(kind)
        kind = type(options["choices"][0])
    if kind not in _SCALARS:
        raise TypeError(f"{item.name}: no command-line flag for fields of type {hint!r}")
    metavar = kind.__name__.upper() if "choices" not in options else None
    group.add_argument(
        flag,
        dest=dest,
        type=kind,
        default=default,
        metavar=metavar,
        help=help_text if options.get("nargs") else _with_default(help_text, default),
        **options,
    )


def _add_nested(parser, group, item: dataclasses.Field, nested: type) -> None:
    """`--NAME` switches the nested settings on; `--NAME-FIELD` sets each of them."""
    help_text = item.metadata.get("help", "").replace("%", "%%")
    group.add_argument(_flag(item.name), dest=item.name, action="store_true", help=help_text)
    nested_group = parser.add_argument_group(f"{item.name} ({nested.__name__})", _first_line(nested))
    hints = typing.get_type_hints(nested)
    for sub in dataclasses.fields(nested):
        _add_scalar(
            nested_group, sub, hints[sub.name], _flag(f"{item.name}_{sub.name}"), f"{item.name}_{sub.name}"
        )


def _declaring_class(config_class: type, name: str) -> type:
    """The most derived class that (re)declares the field: an override moves it to that group."""
    for cls in config_class.__mro__:
        if name in vars(cls).get("__annotations__", {}):
            return cls
    raise LookupError(name)


def _nested_dataclass(hint) -> type | None:
    kind = _unwrap_optional(hint)
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def _unwrap_optional(hint):
    """`X | None` -> X (None stays the default; a flag always takes a value of type X)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Single:
    """One item of a list flag: its type and choices, without the list."""

    nargs = None

    def __init__(self, action: argparse.Action) -> None:
        self.type, self.choices, self.metavar = action.type, action.choices, action.metavar


def _with_default(help_text: str, default) -> str:
    if default is None:
        return help_text
    return f"{help_text} (default: %(default)s)".lstrip()


def _first_line(cls: type) -> str | None:
    """The class docstring's first line; None for dataclass's generated `Name(field: type, ...)`."""
    doc = cls.__doc__
    if not doc or doc.startswith(f"{cls.__name__}("):
        return None
    return doc.strip().splitlines()[0]
