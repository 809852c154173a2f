"""Provenance written beside every output (git commit, package versions) and the output
helpers every writer shares: output-name checks, atomic JSON / Parquet writes, the folder a
failed run removes (docs/ARCHITECTURE.md: every run writes its outputs and a manifest.json)."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SIM_PACKAGES = ("ds-study", "numpy", "numba", "scipy", "pandas", "pyarrow", "mesa", "altair",
                "ray")


def check_output_name(name: str) -> str:
    """An output folder name: letters, digits, '.', '_', '-' (no path separators)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name or "") or name in (".", ".."):
        raise ValueError(f"output name must be letters, digits, '.', '_' or '-', got {name!r}")
    return name


def check_run_name(name: str, option: str) -> str:
    """`name` when it is one folder name under an output root (outputs/<kind>/<name>/,
    docs/ARCHITECTURE.md): not empty, not '.' or '..', no path separator ('/' or '\\'), no
    control character, at most 255 bytes. Anything else would write outside the root or
    nowhere; ValueError with a one-line message naming `option`."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is not a folder name"
    elif any(sep in name for sep in ("/", "\\", os.sep, os.altsep or "/")):
        problem = "holds a path separator"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        problem = "holds a control character"
    elif len(name.encode("utf-8", "surrogateescape")) > 255:
        problem = "is longer than 255 bytes"
    if problem:
        raise ValueError(f"{option} must be a single folder name (one path component, no "
                         f"'/' or '..'); {name!r} {problem}")
    return name


def first_missing_folder(path: str | Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None if it exists): what
    creating `path` creates, hence what a failed command removes."""
    path, top = Path(path).absolute(), None
    while not path.exists() and path != path.parent:
        top, path = path, path.parent
    return top


def git_commit(path: Path | None = None) -> str | None:
    """HEAD of the checkout holding `path` (default: this repo), "-dirty" when tracked files
    differ from it; None outside a git checkout."""
    cwd = path or REPO_ROOT
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty.strip() else "")) or None


def package_versions(names: Iterable[str] = SIM_PACKAGES) -> dict[str, str | None]:
    """Installed versions (None where a package is absent), plus the Python version."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def json_default(obj: Any) -> Any:
    """numpy scalars and arrays as plain numbers and lists, anything else as its string."""
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def finite_json(obj: Any) -> Any:
    """`obj` with numpy values as Python ones and NaN / infinities (which strict JSON
    parsers reject) as None, recursively."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON to a temporary file beside `path`, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(finite_json(data), indent=2, default=json_default, allow_nan=False)
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def write_parquet_atomic(df: Any, path: Path) -> None:
    """Write a DataFrame to a temporary file in the same folder, fsync, then os.replace: a
    reader (or a resumed run) sees either no file or the whole file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
