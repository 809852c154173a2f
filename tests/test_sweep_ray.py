"""The Ray executor: results equal to the local executor's on a local cluster started by the
test, and the runtime_env that ships a cell's code to workers without a checkout
(sim.executors; the `ray start` / `ray job submit` runs are in test_ray_cluster.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from sim import executors
from sim.executors import (
    RAY_WORKER_ENV,
    REPO_ROOT,
    check_ray_address,
    job_ships_this_code,
    ray_runtime_env,
    runtime_env_for_job,
    submitted_job_env,
)
from sim.grid import GridConfig, TrainingConfig
from sim.sweep import run_sweep

ray = pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'ds-study[dist]'")


@pytest.mark.ray
def test_ray_executor_matches_local(tmp_path) -> None:
    grid = GridConfig(
        lengths=(10, 100),
        objectives=("surrogate", "surrogate+kl"),
        training=TrainingConfig(steps=10, n_agents=2),
    )
    local = run_sweep(grid, "loc", tmp_path, workers=1, progress=False)
    # Ray started by the caller without a runtime_env: used as it is, the workers of this
    # one-machine cluster import the checkout (Ray puts the driver's cwd on their path) and
    # reuse its Numba cache; shipping the code is test_ray_cluster.py's
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        dist = run_sweep(grid, "ray", tmp_path, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert len(dist.computed) == 4
    pd.testing.assert_frame_equal(local.results, dist.results, check_exact=True)


def _uploaded(env: dict, tmp_path: Path) -> tuple[list[str], int]:
    """The files Ray's own packaging puts in the working_dir upload, and its size in bytes."""
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import _zip_files

    out = tmp_path / "upload.zip"
    excludes = ray_constants.get_runtime_env_default_excludes() + env["excludes"]
    _zip_files(env["working_dir"], excludes, str(out), include_gitignore=True)
    with zipfile.ZipFile(out) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    return names, out.stat().st_size


def test_runtime_env_ships_core_and_sim_only(tmp_path) -> None:
    env = ray_runtime_env()
    assert env["working_dir"] == str(REPO_ROOT)
    assert RAY_WORKER_ENV == {"NUMBA_NUM_THREADS": "1"}  # set on the tasks
    names, size = _uploaded(env, tmp_path)
    wanted = sorted(str(p.relative_to(REPO_ROOT)) for pkg in ("core", "sim")
                    for p in (REPO_ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    assert sorted(names) == wanted
    assert size < 1024 * 1024  # Ray refuses 512 MiB and warns from half that


def test_runtime_env_leaves_out_data_caches_and_odd_names(tmp_path) -> None:
    root = tmp_path / "repo"
    for rel in ("core/__init__.py", "sim/__init__.py", "sim/cell.py",
                "sim/__pycache__/cell.cpython-311.pyc", "sim/__pycache__/k.nbi",
                "sim/cells.parquet", "outputs/sweeps/x/results.parquet", ".git/HEAD",
                ".offline/w.gguf", ".venv/bin/python", "docs/a.md", "a[1]/f.py", "!x/f.py",
                "#y/f.py", "cli.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    names, _ = _uploaded(ray_runtime_env(root), tmp_path)
    assert sorted(names) == ["core/__init__.py", "sim/__init__.py", "sim/cell.py"]


def test_submitted_job_env(monkeypatch) -> None:
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert submitted_job_env() is None  # a plain driver
    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert submitted_job_env() == {"working_dir": "gcs://_ray_pkg_0123.zip"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {}}))
    assert submitted_job_env() == {}


def test_job_ships_this_code(monkeypatch) -> None:
    import core
    import sim

    job = {"working_dir": "gcs://_ray_pkg_0123.zip"}
    assert not job_ships_this_code(None) and not job_ships_this_code({"env_vars": {}})
    assert not job_ships_this_code(job)  # this driver runs the checkout, not Ray's copy
    unpacked = "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_0123"
    monkeypatch.setattr(core, "__file__", f"{unpacked}/core/__init__.py")
    monkeypatch.setattr(sim, "__file__", f"{unpacked}/sim/__init__.py")
    assert job_ships_this_code(job)
    assert job_ships_this_code({"py_modules": ["gcs://_ray_pkg_4567.zip"]})
    assert not job_ships_this_code({"pip": ["numpy"]})


@pytest.mark.parametrize("job, ships, added", [
    (None, False, "ours"),  # a plain driver: the code on the job
    # `ray job submit --working-dir .` from the repository: nothing uploaded again
    ({"working_dir": "gcs://_ray_pkg_0123.zip"}, True, {}),
    # a job that ships no code: ours added to it (env_vars merge variable by variable)
    ({"env_vars": {"A": "1"}, "pip": ["numpy"]}, False, "ours"),
    # a job with a working_dir of other code: core and sim as py_modules beside it
    ({"working_dir": "gcs://_ray_pkg_0123.zip"}, False, "py_modules"),
    # a job with py_modules of other code: our working_dir beside them
    ({"py_modules": ["s3://b/m.zip"]}, False, "ours"),
    # a job with both keys: the code it chose (a second value would conflict)
    ({"working_dir": "s3://b/w.zip", "py_modules": ["s3://b/m.zip"]}, False, {}),
])
def test_runtime_env_for_job(monkeypatch, job, ships, added) -> None:
    monkeypatch.setattr(executors, "job_ships_this_code", lambda env: ships)
    got = runtime_env_for_job(job)
    if added == "ours":
        assert got == ray_runtime_env()
    elif added == "py_modules":
        assert got["py_modules"] == [str(REPO_ROOT / "core"), str(REPO_ROOT / "sim")]
        assert "__pycache__" in got["excludes"]
    else:
        assert got == added
    assert not set(got) & set(job or {})  # ray.init refuses a key the job has


def test_auto_address_is_accepted() -> None:
    check_ray_address("auto")
    check_ray_address(None)
    with pytest.raises(RuntimeError, match="HOST:PORT"):
        check_ray_address("nohost")
