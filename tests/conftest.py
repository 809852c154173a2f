"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The paper's reference tables: $DS_STUDY_REFERENCE or ../shared/reference."""
    env = os.environ.get("DS_STUDY_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    path = reference_dir()
    if not (path / "appendix_c.csv").exists():
        pytest.fail(f"reference tables not found at {path} (set DS_STUDY_REFERENCE)")
    return path


def assert_clean_cli_error(res) -> None:
    """A click result that failed on purpose: a usage or ClickException exit (SystemExit with
    a non-zero code and an "Error..." line), not a crash that CliRunner caught for us."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Error" in res.output and "Traceback" not in res.output
