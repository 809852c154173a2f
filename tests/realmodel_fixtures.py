"""Helpers for the realmodel tests (tests/conftest.py is shared, so fixtures live here)."""

from __future__ import annotations

from pathlib import Path

import pytest


def save_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-layer random Qwen2 + char tokenizer saved with save_pretrained (no downloads)."""
    pytest.importorskip("transformers")
    from realmodel.models import tiny_random_model

    model, tokenizer = tiny_random_model(seed=0)
    path = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
