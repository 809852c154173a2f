"""The `realmodel data` run (DESIGN.md §5): the train/test splits and both SFT sets, written
with their run record.

`<out>/` holds `train`, `test`, `sft_reflection` and `sft_no_reflection`, each as `.jsonl`
and `.parquet` (realmodel.tasks.write_records), and `manifest.json`, the run record
(`core.records`, kind "data"): `config` the options (tasks, id_tasks, n_train, n_test, seed,
ft_share, n_reflections); `results` split_spec (`realmodel.tasks.split_spec`), files (the
JSONL paths) and counts (records per file). Everything is built before anything is written;
a write that fails removes the folders this run created, or else marks the record failed.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from core.errors import ExpectedError
from core.provenance import first_missing_folder
from core.records import finish_record, record_outcome, start_record
from realmodel.run_records import previous_record

PACKAGES = ("ds-study", "numpy", "pandas", "pyarrow")
SFT_KINDS = ("no-reflection", "reflection")


class DataRunError(ExpectedError, RuntimeError):
    """An output folder `realmodel data` must not write into (message is one line)."""


def build_data(tasks: str, id_tasks: str, n_train: int, n_test: int, seed: int,
               ft_share: float, n_reflections: int) -> dict[str, list[dict[str, Any]]]:
    """{"train", "test", "sft_no_reflection", "sft_reflection": records}; ValueError on a
    bad setting (nothing written)."""
    from realmodel.synthesis import build_sft_dataset
    from realmodel.tasks import make_splits

    data = make_splits(tasks, id_tasks, n_train=n_train, n_test=n_test, seed=seed)
    for kind in SFT_KINDS:
        data[f"sft_{kind.replace('-', '_')}"] = build_sft_dataset(
            data["train"], kind, ft_share=ft_share, n_reflections=n_reflections, seed=seed)
    return data


def check_out(out: str | Path) -> None:
    """Refuse (DataRunError, one line) a folder holding the record of another kind of run or
    of an older version: its files would be mixed with these."""
    previous_record(out, ("data",), DataRunError, "choose another --out")


def write_data(out: str | Path, data: dict[str, list[dict[str, Any]]],
               config: dict[str, Any]) -> list[Path]:
    """Write `data` (from `build_data` with the options `config`) under `out` with its run
    record; returns the JSONL paths. On a failure the folders this call created are removed
    (else the record says "failed"), and the error is raised again."""
    from realmodel import tasks

    out = Path(out)
    start = time.time()
    created = first_missing_folder(out)
    spec = tasks.split_spec(config["tasks"], config["id_tasks"], config["seed"])
    try:
        start_record(out, "data", config, packages=PACKAGES, split_spec=spec)
        paths = []
        for name, records in data.items():
            path = out / f"{name}.jsonl"
            tasks.write_records(records, path)  # looked up here: tests replace it
            paths.append(path)
        finish_record(out, "done", wall_time_s=time.time() - start,
                      files=[str(p) for p in paths],
                      counts={name: len(records) for name, records in data.items()})
    except BaseException as exc:
        if created is not None:  # a failed command leaves no new folder
            shutil.rmtree(created, ignore_errors=True)
        else:
            with contextlib.suppress(Exception):  # the original error is the one to raise
                record_outcome(out, exc, wall_time_s=time.time() - start)
        raise
    return paths
