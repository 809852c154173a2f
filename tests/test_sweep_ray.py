"""The Ray executor against a local cluster started by the test (DESIGN.md §2-§3)."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.executors import REPO_ROOT
from sim.grid import GridConfig, TrainingConfig
from sim.sweep import run_sweep

ray = pytest.importorskip("ray")


@pytest.mark.ray
def test_ray_executor_matches_local(tmp_path, monkeypatch) -> None:
    grid = GridConfig(
        lengths=(10, 100),
        objectives=("surrogate", "surrogate+kl"),
        training=TrainingConfig(steps=10, n_agents=2),
    )
    local = run_sweep(grid, "loc", tmp_path, workers=1, progress=False)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={
            "env_vars": {
                "PYTHONPATH": str(REPO_ROOT),
                "NUMBA_NUM_THREADS": "1",
            }
        },
    )
    try:
        dist = run_sweep(grid, "ray", tmp_path, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert len(dist.computed) == 4
    pd.testing.assert_frame_equal(local.results, dist.results, check_exact=True)
