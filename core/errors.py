"""The one CLI error style of every command (docs/ARCHITECTURE.md): an expected failure
ends the command with one line, `Error: <message>`, and exit status 1; no traceback.

Expected failures are bad input and what the user can fix: ValueError (the configs'
validation, DESIGN §2-§6 bounds), OSError (files), NotImplementedError, OverflowError,
MemoryError (a run too large for this machine) and `ExpectedError` (the packages' own
failures that are not ValueErrors: a missing model, a run that cannot resume, ...). A command
may count more types as expected (`clear_errors(TypeError)`, `clear_errors(ImportError)`);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, overload

import click

F = TypeVar("F", bound=Callable[..., Any])


class ExpectedError(Exception):
    """A failure whose message is written for the user (one line at the CLI). Packages mix it
    into their own error types, e.g. `class TrainingError(ExpectedError, RuntimeError)`."""


EXPECTED: tuple[type[BaseException], ...] = (
    ValueError, OSError, NotImplementedError, OverflowError, MemoryError, ExpectedError)

# optional dependencies -> the pyproject extra that installs them (the hint of a missing one)
EXTRAS = {"torch": "real", "transformers": "real", "trl": "real", "peft": "real",
          "datasets": "real", "accelerate": "real", "gguf": "real", "vllm": "vllm",
          "ray": "dist"}


def one_line(text: str) -> str:
    """`text` on one line: every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def message(exc: BaseException) -> str:
    """The one-line message of an expected failure: its text on one line, else its type's
    name; "out of memory: ..." for a MemoryError; a missing optional module names the extra
    that installs it."""
    text = one_line(str(exc))
    if isinstance(exc, MemoryError):
        return "out of memory: " + (text or "the inputs are too large")
    if isinstance(exc, ImportError):
        root = (getattr(exc, "name", None) or "").split(".")[0]
        if root in EXTRAS:
            if isinstance(exc, ModuleNotFoundError):
                text = f"{root} is not installed"
            text += f" (pip install 'ds-study[{EXTRAS[root]}]')"
    return text or type(exc).__name__


def fail(exc: BaseException) -> click.ClickException:
    """The CLI error (exit status 1) of an expected failure; raise it `from None`."""
    return click.ClickException(message(exc))


@overload
def clear_errors(fn: F) -> F: ...


@overload
def clear_errors(*also: type[BaseException]) -> Callable[[F], F]: ...


def clear_errors(*args: Any) -> Any:
    """Decorator of a click command: the EXPECTED failures (and the types in `also`) become
    one-line CLI errors (`fail`). Use bare, `@clear_errors`, or `@clear_errors(TypeError)`."""
    if len(args) == 1 and callable(args[0]) and not isinstance(args[0], type):
        return _wrap(args[0], EXPECTED)
    return lambda fn: _wrap(fn, EXPECTED + tuple(args))


def _wrap(fn: F, expected: tuple[type[BaseException], ...]) -> F:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except expected as exc:
            raise fail(exc) from None

    return wrapper  # type: ignore[return-value]
