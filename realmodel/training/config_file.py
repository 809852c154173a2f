"""`realmodel sft|grpo --config run.yaml`: a run's settings from a file (DESIGN.md §5).

The file is one YAML (or JSON) mapping. Each key is

* a run-config field (config.py: ``learning_rate``, ``max_new_tokens``, ``report_to``, ...,
  and ``preset``), checked against the field's type; or
* a field of TRL's config for the method (``trl.SFTConfig`` / ``trl.GRPOConfig``, ~135 /
  ~190 fields: ``max_grad_norm``, ``adam_beta2``, ``top_p``, ...). Its name and value are
  checked with transformers' ``HfArgumentParser`` over that class, the parser behind TRL's
  own ``--config``: a string is converted by the parser's type for the field (so
  ``learning_rate: 2e-6``, a string to YAML, or ``lr_scheduler_type: cosine`` behave as on
  TRL's command line, choices included), any other value must have the field's annotated
  type. It lands in the run config's ``trl_args`` and reaches the TRL config as given
  (trl_config.py), where TRL's own validation runs.

Where a TRL field is set from a run-config field of another name (``TRL_ALIASES``:
``max_completion_length`` <- ``max_new_tokens``, ``use_vllm`` <- ``backend``, ``use_cpu`` <-
``device``), the TRL name is read as that run-config field: ``max_completion_length: 64`` is
``max_new_tokens: 64`` (``use_vllm: true`` is ``backend: vllm``, false ``transformers``;
``use_cpu: true`` is ``device: cpu``, false ``auto``), so the pair is one setting and the
precedence below applies to it as a whole. Both names in one file must agree (``backend:
auto`` agrees with either ``use_vllm`` and takes its value; ``use_cpu: false`` agrees with any
device but cpu), else the file is refused in one line naming both keys. Fields the run sets
itself (``TRL_RESERVED``: ``output_dir``, ``resume_from_checkpoint``) and unknown keys are
refused in one line (with the closest field name). A nested ``trl_args`` mapping (what
``--print-config`` shows) is read as top-level keys.

Precedence: preset < file < command-line options. The preset is ``--preset`` when given,
else the file's ``preset``, else the default (smol). ``warmup_ratio`` and ``warmup_steps`` are
one setting too: a layer that sets one (non-zero) clears the other from the layers below.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.errors import ExpectedError, one_line
from realmodel.training.checks import TRL_ALIASES, TRL_RESERVED
from realmodel.training.config import (
    DEFAULT_PRESET,
    GRPO_PRESETS,
    SFT_PRESETS,
    GRPORunConfig,
    RunConfigError,
    SFTRunConfig,
    TrainRunConfig,
)

RUN_CONFIGS: dict[str, type[TrainRunConfig]] = {"sft": SFTRunConfig, "grpo": GRPORunConfig}
PRESETS = {"sft": SFT_PRESETS, "grpo": GRPO_PRESETS}
EXCLUSIVE = {"warmup_steps": ("warmup_ratio", 0.0), "warmup_ratio": ("warmup_steps", 0)}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class ConfigFileError(ExpectedError, ValueError):
    """A config file the run cannot use (message: one line naming the file and the key)."""


# an alias: TRL value -> run-config value, and (run-config value given too, TRL value) ->
# the merged value or None where they contradict
_ALIASES: dict[str, tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]] = {
    "max_completion_length": (lambda v: v, lambda ours, v: ours if ours == v else None),
    "use_vllm": (lambda v: "vllm" if v else "transformers",
                 lambda ours, v: ("vllm" if v else "transformers")
                 if ours in ("auto", "vllm" if v else "transformers") else None),
    "use_cpu": (lambda v: "cpu" if v else "auto",
                lambda ours, v: ours if (ours == "cpu") == bool(v) else None),
}
_ALIAS_TYPES = {"max_completion_length": int, "use_vllm": bool, "use_cpu": bool}


def load(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML/JSON file (ConfigFileError: unreadable, not YAML, no mapping)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not YAML: {one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} must hold a mapping of settings, got "
                              f"{type(data).__name__}")
    return data


def split(method: str, data: Mapping[str, Any], source: str) -> tuple[dict, dict]:
    """(run-config values, TRL-only values) of a config file's mapping `data`, every name and
    value checked (see the module docstring); `source` names the file in messages."""
    run_cls = RUN_CONFIGS[method]
    hints = typing.get_type_hints(run_cls)
    own = {f.name for f in dataclasses.fields(run_cls)} - {"trl_args"}
    data = _flatten(dict(data), source)
    ours: dict[str, Any] = {}
    trl: dict[str, Any] = {}
    aliases: dict[str, Any] = {}
    parser = None
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigFileError(f"{source}: keys must be names, got {key!r}")
        if key in own:
            ours[key] = _coerce_own(key, value, hints[key], source)
        elif TRL_ALIASES.get(key) in own:
            aliases[key] = _coerce(key, value, _ALIAS_TYPES[key], source)
        elif key in TRL_RESERVED:
            raise ConfigFileError(f"{source}: {key} cannot be set: {TRL_RESERVED[key]}")
        else:
            parser = parser or _Parser(method)
            trl[key] = parser.convert(key, value, source, known=sorted(own | set(TRL_ALIASES)))
    for key, value in aliases.items():
        target = TRL_ALIASES[key]
        to_ours, merge = _ALIASES[key]
        if target not in ours:
            ours[target] = to_ours(value)
            continue
        merged = merge(ours[target], value)
        if merged is None:
            raise ConfigFileError(f"{source}: {key}: {value!r} contradicts {target}: "
                                  f"{ours[target]!r} (the same setting: give one)")
        ours[target] = merged
    return ours, trl


def resolve(method: str, preset: str | None, path: str | Path | None,
            flags: Mapping[str, Any]) -> TrainRunConfig:
    """The run config of preset < file < `flags`. `preset` is --preset when given on the
    command line, else None; `flags` are the options (None: not given). A RunConfigError
    names a field the file set as "field (file)" (its `names`)."""
    file_ours: dict[str, Any] = {}
    file_trl: dict[str, Any] = {}
    source = ""
    if path is not None:
        source = Path(path).name
        file_ours, file_trl = split(method, load(path), source)
    name = preset or file_ours.pop("preset", None) or DEFAULT_PRESET
    file_ours.pop("preset", None)
    table = PRESETS[method]
    if name not in table:
        raise RunConfigError(f"preset must be one of {', '.join(table)}; got {name!r}",
                             "preset")
    given = {k: v for k, v in flags.items() if v is not None}
    values = dict(table[name])
    for layer in (file_ours, given):
        _apply(values, layer)
    try:
        return RUN_CONFIGS[method](preset=name, trl_args=file_trl, **values)
    except RunConfigError as exc:
        exc.names = {k: f"{k} ({source})" for k in file_ours if k not in given}
        raise


def _apply(values: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        values[key] = value
        other, off = EXCLUSIVE.get(key, (None, None))
        if other is not None and value and other not in layer:
            values[other] = off


def _flatten(data: dict[str, Any], source: str) -> dict[str, Any]:
    """A nested `trl_args` mapping as top-level keys (a key given both ways must agree)."""
    nested = data.pop("trl_args", None) or {}
    if not isinstance(nested, dict):
        raise ConfigFileError(f"{source}: trl_args must be a mapping of TRL fields")
    for key, value in nested.items():
        if key in data and data[key] != value:
            raise ConfigFileError(f"{source}: {key} is given twice, at the top and in "
                                  "trl_args, with different values")
        data.setdefault(key, value)
    return data


def _coerce_own(key: str, value: Any, tp: Any, source: str) -> Any:
    if key == "scale_rewards" and isinstance(value, bool):  # TRL's True/False spelling
        return value
    if typing.get_origin(tp) is tuple:  # lora_target_modules, report_to: a list or "a,b"
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigFileError(f"{source}: {key} must be a list of names or 'a,b,...', got "
                              f"{value!r}")
    return _coerce(key, value, tp, source)


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """`value` as a `tp` (int, float, bool or str): YAML's own type, or a string converted."""
    if isinstance(value, str) and tp is not str:
        text = value.strip().lower()
        try:
            if tp is bool and text in _TRUE + _FALSE:
                return text in _TRUE
            if tp is int:
                return int(text)
            if tp is float:
                return float(text)
        except ValueError:
            pass
    elif _matches(value, tp):
        return float(value) if tp is float else value
    raise ConfigFileError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")


class _Parser:
    """The HfArgumentParser of the method's TRL config: its field names, and each field's
    conversion of a string, as TRL's command line does it."""

    def __init__(self, method: str) -> None:
        from transformers import HfArgumentParser

        from realmodel.training.trl_config import trl_class

        self.cls = trl_class(method)
        self.hints = typing.get_type_hints(self.cls)
        parser = HfArgumentParser(self.cls)
        self.actions = {a.dest: a for a in parser._actions if a.dest in self.hints}

    def convert(self, key: str, value: Any, source: str, known: list[str]) -> Any:
        if key not in self.actions:
            close = difflib.get_close_matches(key, [*self.actions, *known], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigFileError(f"{source}: unknown key {key!r} (neither a run-config field "
                                  f"nor a trl.{self.cls.__name__} field{hint})")
        action, tp = self.actions[key], self.hints[key]
        if isinstance(value, str) and callable(action.type):
            try:
                out = action.type(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                raise ConfigFileError(f"{source}: {key}: {value!r} is not a valid "
                                      f"{_type_name(tp)} ({one_line(exc)})") from None
            if action.choices is not None and out not in action.choices:
                raise ConfigFileError(f"{source}: {key} must be one of "
                                      f"{', '.join(map(str, action.choices))}; got {value!r}")
            return [out] if action.nargs in ("+", "*") else out
        if not _matches(value, tp):
            raise ConfigFileError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
        return value


def _matches(value: Any, tp: Any) -> bool:
    """Whether a YAML value fits a dataclass annotation (a class TRL builds from a mapping
    itself, e.g. AcceleratorConfig, takes anything: TRL checks it)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, str | typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool) and (
            tp is float or isinstance(value, int))
    if tp is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value in {e.value for e in tp} or isinstance(value, tp)
    if tp in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list | tuple) and all(
            _matches(v, args[0]) for v in value if args and args[0] is not Ellipsis)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    return True


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false",
                "str": "a string"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "").replace("NoneType", "None")
