"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def reference() -> Path:
    """The paper's reference tables (DESIGN §6): the package data in `analysis/data/`, or
    $DS_STUDY_REFERENCE where set (the same rule as `analysis.observed.reference_dir`)."""
    from analysis.observed import ObservedDataError, reference_dir

    try:
        path = reference_dir()
    except ObservedDataError as exc:
        pytest.fail(str(exc))
    if not (path / "appendix_c.csv").exists():
        pytest.fail(f"reference tables at {path} lack appendix_c.csv")
    return path


def assert_clean_cli_error(res) -> None:
    """A click result that failed on purpose: a usage or ClickException exit (SystemExit with
    a non-zero code and an "Error..." line), not a crash that CliRunner caught for us."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Error" in res.output and "Traceback" not in res.output


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (tmp_path/work): default output roots land there, and a
    command that must write nothing (--print-config) can be checked to leave it empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
