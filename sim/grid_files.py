"""Grid files for `sweep --grid` (TOML or YAML) and command-line overrides -> GridConfig.

Grid files are typed strictly (DESIGN §2 settings; sim.grid's configs): a count is an integer
(an integral float such as 10.0 is read as 10, 10.7 is refused), a real is a finite number
(ell = inf excepted, DESIGN §1), a bool is never taken for a number, and every error names the
key and the file. `build_grid` merges a file's dict with the command line's options. The
update-budget settings (DESIGN §2) are axes (`optimisers`, `second_moments`, `max_grad_norms`,
`couplings`) or one value under [training] (`optimiser`, `second_moment`, `max_grad_norm`,
`coupling`); a file giving both for one setting is refused, a command-line axis wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from core.provenance import check_output_name
from sim.grid import (
    BUDGET_AXES,
    MAX_COUNT,
    MAX_SEED,
    GridConfig,
    LadderConfig,
    TrainingConfig,
    is_finite_real,
    is_integer,
    is_real,
    short_repr,
)
from sim.lengths import MAX_LENGTH, MAX_POINTS, parse_lengths
from sim.model import parse_coupling


def _coerce(cls, data: dict, where: str):
    """Build frozen dataclass `cls` from a dict, lists -> tuples, unknown keys refused."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**clean)


# Grid files are typed strictly: a count is an integer (an integral float such as 10.0 is read
# as 10, 10.7 is refused), a real is a finite number, and a bool is never taken for a number.
def _read_int(value: object, key: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)  # exactly an integer (floats above 2**53 are not exact)
    if not is_integer(value):
        raise ValueError(f"{key} must be an integer, got {short_repr(value)}")
    if value > hi:
        raise ValueError(f"{key} must be at most {hi}, got {short_repr(value)}")
    if value < lo:
        raise ValueError(f"{key} must be at least {lo}, got {short_repr(value)}")
    return int(value)


def _read_float(value: object, key: str, allow_inf: bool = False) -> float:
    if not is_real(value):
        raise ValueError(f"{key} must be a number, got {short_repr(value)}")
    if is_integer(value):
        if not is_finite_real(value):
            raise ValueError(f"{key} is too large, got {short_repr(value)}")
        return value  # unchanged, so the grid's digest (resume check) is what it always was
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{key} must be a finite number, got {value}")
    return float(value)


def _read_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {short_repr(value)}")
    return value


def _read_str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {short_repr(value)}")
    return value


def _read_list(value: object, key: str, item: Callable[[object, str], object],
               scalar_ok: bool = True, size: int | None = None) -> object:
    """A list of items, or (where `scalar_ok`) one item standing for a list of one."""
    if isinstance(value, list | tuple):
        if size is not None and len(value) != size:
            raise ValueError(f"{key} must have {size} entries, got {len(value)}")
        return tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))
    if scalar_ok:
        return item(value, key)
    raise ValueError(f"{key} must be a list, got {short_repr(value)}")


# Field annotation (as written in sim.grid's dataclasses) -> reader of a grid-file value.
_FIELD_READERS: dict[str, Callable[[object, str], object]] = {
    "int": lambda v, k: _read_int(v, k, lo=-MAX_COUNT),  # ranges: the dataclass's own checks
    "int | None": lambda v, k: None if v is None else _read_int(v, k, lo=-MAX_COUNT),
    "float": _read_float,
    "bool": _read_bool,
    "str": _read_str,
    "tuple[str, ...]": lambda v, k: _read_list(v, k, _read_str, scalar_ok=False),
    "tuple[float, ...]": lambda v, k: _read_list(v, k, _read_float, scalar_ok=False),
    "tuple[bool, ...]": lambda v, k: _read_list(v, k, _read_bool, scalar_ok=False),
    "tuple[float, ...] | float": lambda v, k: _read_list(v, k, _read_float),
    # ell = inf is a real setting (no transfer from the per-task u_x, DESIGN §1)
    "tuple[float, float, float]": lambda v, k: _read_list(
        v, k, lambda x, kk: _read_float(x, kk, allow_inf=True), scalar_ok=False, size=3),
    "tuple[bool, bool, bool]": lambda v, k: _read_list(v, k, _read_bool, scalar_ok=False,
                                                         size=3),
    # "none" or a 3x3 matrix, as a nested list or "1 0.5 0; 0 1 0; 0 0 1" (DESIGN §2)
    "Coupling": lambda v, k: parse_coupling(v, k),
}


def _read_couplings(value: object, key: str) -> tuple:
    """A list of couplings, each "none" or a 3x3 matrix; one string stands for a list of one."""
    if isinstance(value, str):
        return (parse_coupling(value, key),)
    if not isinstance(value, list | tuple):
        raise ValueError(f"{key} must be a list of couplings ('none' or 3x3 matrices), got "
                         f"{short_repr(value)}")
    return tuple(parse_coupling(v, f"{key}[{i}] (a list of couplings: 'none' or 3x3)")
                 for i, v in enumerate(value))


def _read_table(cls, value: object, table: str) -> dict:
    """The `[table]` of a grid file, each value read by the type of `cls`'s field."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"[{table}] must be a table of settings, got {short_repr(value)}")
    types = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(cls)}
    unknown = set(value) - set(types)
    if unknown:
        raise ValueError(f"unknown key(s) in [{table}]: {', '.join(sorted(map(str, unknown)))}")
    # a field of a type not listed above is passed on to the dataclass's own checks
    return {key: _FIELD_READERS.get(types[key], lambda v, k: v)(v, f"[{table}] {key}")
            for key, v in value.items()}


def _read_lengths(value: object, key: str = "lengths") -> object:
    if isinstance(value, str):
        return value  # a spec, parsed with `points` by build_grid
    return _read_list(value, key, lambda v, k: _read_int(v, k, lo=1, hi=MAX_LENGTH))


_TOP_READERS: dict[str, Callable[[object, str], object]] = {
    "name": lambda v, k: check_output_name(_read_str(v, k)),
    "lengths": _read_lengths,
    "points": lambda v, k: _read_int(v, k, lo=1, hi=MAX_POINTS),
    "objectives": lambda v, k: _read_list(v, k, _read_str),
    "betas": lambda v, k: _read_list(v, k, _read_float),
    "token_models": lambda v, k: _read_list(v, k, _read_str),
    "optimisers": lambda v, k: _read_list(v, k, _read_str),
    "second_moments": lambda v, k: _read_list(v, k, _read_str),
    "max_grad_norms": lambda v, k: _read_list(v, k, _read_float),
    "couplings": _read_couplings,
    "seed": lambda v, k: _read_int(v, f"{k} (64 bits)", lo=0, hi=MAX_SEED),
}


def read_grid_data(data: object, source: str = "grid") -> dict:
    """Check the types of a grid file's content and return it normalised (lists as tuples,
    integral floats as ints); every error names the key and `source` (the file)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a mapping of grid keys, got {short_repr(data)}")
    try:
        unknown = set(data) - set(_TOP_READERS) - {"training", "ladder"}
        if unknown:
            raise ValueError(f"unknown grid key(s): {', '.join(sorted(map(str, unknown)))}")
        out = {key: _TOP_READERS[key](value, key) for key, value in data.items()
               if key in _TOP_READERS}
        if "training" in data:
            out["training"] = _read_table(TrainingConfig, data["training"], "training")
        if "ladder" in data:
            out["ladder"] = _read_table(LadderConfig, data["ladder"], "ladder")
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return out


def load_grid_file(path: str | Path) -> dict:
    """Read a TOML (.toml) or YAML (.yaml/.yml) grid file into a plain dict, its values
    checked and normalised by `read_grid_data` (errors name the key and the file)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"grid file not found: {path}")
    if not path.is_file():
        raise ValueError(f"grid file is not a file: {path}")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"grid file must end in .toml, .yaml or .yml: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"grid file {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"bad TOML in {path}: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"bad YAML in {path}: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ValueError(f"grid file {path} must hold a mapping")
    return read_grid_data(data, f"grid file {path}")


def build_grid(file_data: dict | None = None, source: str | None = None,
               **overrides) -> tuple[str | None, GridConfig]:
    """GridConfig from a grid file's dict and command-line overrides (None = not given).

    Recognised top-level keys: name, lengths (a spec string like "10..1000" or a list),
    points, objectives, betas, token_models, optimisers, second_moments, max_grad_norms,
    couplings, seed, [training], [ladder]. Overrides: the same names plus any TrainingConfig
    field. `source` (the file) is named in errors. Returns (name, grid).
    """
    where = source or "grid"
    data = read_grid_data(dict(file_data or {}), where)
    training = dict(data.pop("training", {}))
    for axis, scalar in BUDGET_AXES.items():
        if axis in data and scalar in training:
            raise ValueError(f"{where}: give {axis} (an axis) or [training] {scalar} (one "
                             "value), not both")
    ladder = dict(data.pop("ladder", {}))
    name = data.pop("name", None)
    points = data.pop("points", 16)
    train_fields = {f.name for f in fields(TrainingConfig)}
    given = False
    for key, value in overrides.items():
        if value is None:
            continue
        given = True
        if key == "name":
            name = value
        elif key == "points":
            points = value
        elif key in train_fields:
            training[key] = value
        else:
            data[key] = value
    lengths = data.pop("lengths", "10..1000")
    try:
        if isinstance(lengths, str):
            cli = overrides.get("lengths") is not None
            lengths = parse_lengths(lengths, points, "--lengths" if cli else "lengths")
        elif is_real(lengths):
            lengths = [lengths]
        data["lengths"] = tuple(int(x) if is_integer(x) else x for x in lengths)
        for axis in ("objectives", "betas", "token_models", "optimisers", "second_moments",
                     "max_grad_norms", "couplings"):
            if axis in data and not isinstance(data[axis], list | tuple):
                data[axis] = (data[axis],)
        if "betas" in data:  # floats, as cells and the grid's digest have always had them
            data["betas"] = tuple(float(b) if is_finite_real(b) else b for b in data["betas"])
        unknown = set(data) - {f.name for f in fields(GridConfig)}
        if unknown:
            raise ValueError(f"unknown grid key(s): {', '.join(sorted(unknown))}")
        grid_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        grid = GridConfig(
            training=_coerce(TrainingConfig, training, "[training]"),
            ladder=_coerce(LadderConfig, ladder, "[ladder]"),
            **grid_kwargs,
        )
    except (ValueError, TypeError) as exc:
        if source is None:
            raise
        context = f"{source} and the command line" if given else source
        raise ValueError(f"{exc} (grid from {context})") from None
    return name, grid

