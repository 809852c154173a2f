"""The one CLI error style (core.errors): expected failures end in one `Error:` line."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from core.errors import ExpectedError, clear_errors, fail, message
from tests.conftest import assert_clean_cli_error


@pytest.mark.parametrize("exc,text", [
    (ValueError("bad\n  --lr   value"), "bad --lr value"),
    (ValueError(""), "ValueError"),
    (MemoryError(), "out of memory: the inputs are too large"),
    (MemoryError("12 GB"), "out of memory: 12 GB"),
    (ModuleNotFoundError("No module named 'torch'", name="torch"),
     "torch is not installed (pip install 'ds-study[real]')"),
    (ModuleNotFoundError("No module named 'ray'", name="ray"),
     "ray is not installed (pip install 'ds-study[dist]')"),
    (ModuleNotFoundError("No module named 'foo'", name="foo"), "No module named 'foo'"),
])
def test_message_is_one_line(exc, text):
    assert message(exc) == text
    assert fail(exc).format_message() == text


def _command(exc: BaseException, *also: type[BaseException]) -> click.Command:
    def body() -> None:
        raise exc

    decorated = clear_errors(*also)(body) if also else clear_errors(body)
    return click.command("c")(decorated)


@pytest.mark.parametrize("exc", [ValueError("v"), OSError("o"), OverflowError("x"),
                                 ExpectedError("e"), MemoryError()])
def test_expected_failures_are_one_error_line(exc):
    res = CliRunner().invoke(_command(exc))
    assert_clean_cli_error(res)
    assert res.exit_code == 1 and res.output.count("\n") == 1


def test_other_failures_keep_their_traceback_unless_counted_as_expected():
    res = CliRunner().invoke(_command(TypeError("t")))
    assert isinstance(res.exception, TypeError)
    res = CliRunner().invoke(_command(TypeError("t"), TypeError))
    assert_clean_cli_error(res)
    assert res.output == "Error: t\n"
