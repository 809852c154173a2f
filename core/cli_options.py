"""Click options built from a config dataclass: the dataclass is the command line.

Each setting is documented once, in its field (TRL's `field(metadata={"help": ...})`):

    lr: float = field(default=0.1, metadata=doc("learning rate", "§2"))

and a command takes one option per field, with the field's default, its type and its help
(CleanRL's pattern: the dataclass is the parser):

    TRAIN_OPTIONS = config_options(TrainConfig, rename={"n_agents": "--agents"})

    @click.command()
    @TRAIN_OPTIONS
    def train(**fields): TrainConfig(**fields)

Field metadata (`doc` writes it): "help" (required: every option says what it sets),
"design" (a DESIGN.md section, appended to the help) and "choices" (the allowed strings,
shown and checked by click.Choice; a `Literal[...]` annotation gives them too).

Types come from the annotations: int, float and str as they are; bool as a flag (`--x` when
the default is False, `--x/--no-x` otherwise); `X | None` as X with the field's default (None
shows none); `tuple[str, ...]` as a comma-separated list. Anything else needs an explicit
click type (`types`). With `preset=True` (runs built as "a preset, then the options given",
DESIGN §5) every option defaults to None, shown as "the preset's", and bools are
`--x/--no-x`, so that a run can tell an option given from one left out.
"""

from __future__ import annotations

import dataclasses
import math
import types as pytypes
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

HELP = "help"
DESIGN = "design"
CHOICES = "choices"
PRESET_DEFAULT = "the preset's"  # what a preset-mode option shows as its default

F = TypeVar("F", bound=Callable[..., Any])


def doc(help: str, design: str | None = None,
        choices: Sequence[str] | None = None) -> dict[str, Any]:
    """The metadata of a documented field: `field(default=..., metadata=doc("...", "§2"))`.

    `help` says what the field sets; `design` names the DESIGN.md section that defines it
    (e.g. "§2"); `choices` are the allowed values of a string field."""
    out: dict[str, Any] = {HELP: help}
    if design is not None:
        out[DESIGN] = design
    if choices is not None:
        out[CHOICES] = tuple(choices)
    return out


class CommaList(click.ParamType):
    """'a,b,c' -> ('a', 'b', 'c'): a `tuple[str, ...]` field on the command line."""

    name = "list"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "A,B,..."

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not items:
            self.fail(f"expected a comma-separated list, got {value!r}", param, ctx)
        return items


def field_help(f: dataclasses.Field) -> str:
    """The help text of a field: its "help" metadata, then "(DESIGN §N)" where it has one."""
    text = f.metadata.get(HELP)
    if not text:
        raise ValueError(f"field {f.name!r} has no help metadata (core.cli_options.doc)")
    design = f.metadata.get(DESIGN)
    return f"{text} (DESIGN {design})" if design else text


def _unwrap_optional(tp: Any) -> Any:
    """X for `X | None` / `Optional[X]`, else `tp`."""
    if typing.get_origin(tp) in (typing.Union, pytypes.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _click_type(f: dataclasses.Field, tp: Any) -> Any:
    """The click type of a field (None for a bool: a flag), from its metadata or annotation."""
    tp = _unwrap_optional(tp)
    if CHOICES in f.metadata:
        return click.Choice(list(f.metadata[CHOICES]))
    if typing.get_origin(tp) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if tp is bool:
        return None
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is tuple and typing.get_args(tp)[1:] == (Ellipsis,) \
            and typing.get_args(tp)[0] is str:
        return CommaList()
    raise TypeError(f"field {f.name!r} has type {tp!r}, which has no click type; pass one in "
                    "`types` or leave the field out")


@dataclass(frozen=True)
class ConfigOptions:
    """Click options for the fields of a config dataclass (build it with `config_options`).

    Calling it decorates a command; each option's parameter name is its field's name, so the
    command's keyword arguments build the config directly (`values` picks them out)."""

    config: type
    names: tuple[str, ...]
    rename: Mapping[str, str | tuple[str, ...]]
    extra_help: Mapping[str, str]
    types: Mapping[str, Any]
    callbacks: Mapping[str, Callable[..., Any]]
    preset: bool

    def _field(self, name: str) -> dataclasses.Field:
        return {f.name: f for f in dataclasses.fields(self.config)}[name]

    def decls(self, name: str) -> tuple[str, ...]:
        """The option's names on the command line, e.g. ("-K", "--max-attempts")."""
        given = self.rename.get(name, "--" + name.replace("_", "-"))
        return (given,) if isinstance(given, str) else tuple(given)

    @property
    def flags(self) -> dict[str, str]:
        """field -> its long option name (what error messages name)."""
        return {n: next(d for d in self.decls(n) if d.startswith("--")).split("/")[0]
                for n in self.names}

    def values(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The config fields among a command's keyword arguments."""
        return {n: kwargs[n] for n in self.names if n in kwargs}

    def option(self, name: str) -> Callable[[F], F]:
        """The click.option decorator of one field."""
        f = self._field(name)
        hints = typing.get_type_hints(self.config)
        ctype = self.types.get(name) or _click_type(f, hints[name])
        help_text = field_help(f)
        if name in self.extra_help:
            help_text = f"{help_text} {self.extra_help[name]}"
        decls = list(self.decls(name))
        default = None if self.preset else f.default
        if default is dataclasses.MISSING:
            raise ValueError(f"field {name!r} of {self.config.__name__} has no default")
        kw: dict[str, Any] = {"help": help_text, "default": default}
        if self.callbacks.get(name) is not None:
            kw["callback"] = self.callbacks[name]
        if ctype is None:  # bool: a flag, or an on/off pair where "not given" or True exists
            long = next(i for i, d in enumerate(decls) if d.startswith("--"))
            if "/" not in decls[long] and (self.preset or default):
                decls[long] = f"{decls[long]}/--no-{decls[long][2:]}"
            if "/" not in decls[long]:
                kw["is_flag"] = True
        else:
            kw["type"] = ctype
        if self.preset:
            kw["show_default"] = PRESET_DEFAULT
        else:
            kw["show_default"] = default is not None and not (ctype is None and not default)
        return click.option(*decls, name, **kw)

    def __call__(self, func: F) -> F:
        for name in reversed(self.names):
            func = self.option(name)(func)
        return func


def config_options(
    config: type,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    rename: Mapping[str, str | tuple[str, ...]] | None = None,
    extra_help: Mapping[str, str] | None = None,
    types: Mapping[str, Any] | None = None,
    callbacks: Mapping[str, Callable[..., Any]] | None = None,
    preset: bool = False,
) -> ConfigOptions:
    """One click option per field of the dataclass `config` (a decorator; see the module).

    include: the fields, in the order shown (default: all, in declaration order), less
        `exclude`.
    rename: field -> its option name(s) where it is not `--field-name`, e.g.
        {"learning_rate": "--lr", "max_attempts": ("-K", "--max-attempts")}.
    extra_help: field -> text appended to its help (what the command adds, e.g. "0: never").
    types, callbacks: field -> a click type / option callback (ranges, checks that name the
        option).
    preset: every option defaults to None ("the preset's"); the run config is the preset
        with the options given.
    Every option is checked now: a field without help or without a click type is an error.
    """
    all_names = [f.name for f in dataclasses.fields(config)]
    names = tuple(n for n in (include if include is not None else all_names)
                  if n not in set(exclude))
    unknown = [n for n in (*names, *(rename or {}), *(extra_help or {}), *(types or {}),
                           *(callbacks or {})) if n not in all_names]
    if unknown:
        raise ValueError(f"{config.__name__} has no field(s) {', '.join(unknown)}")
    options = ConfigOptions(config, names, dict(rename or {}), dict(extra_help or {}),
                            dict(types or {}), dict(callbacks or {}), preset)
    for name in names:
        options.option(name)  # fails now, not when the command is first run
    return options


def number_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
               ) -> Callable[[click.Context, click.Parameter, float], float]:
    """Click callback: a finite number in the interval (NaN passes click.FloatRange)."""
    text = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def check(ctx: click.Context, param: click.Parameter, value: float) -> float:
        ok = (math.isfinite(value) and (value > lo if lo_open else value >= lo)
              and (value < hi if hi_open else value <= hi))
        if not ok:
            raise click.BadParameter(f"must be a number in {text}, got {value}")
        return value

    return check
