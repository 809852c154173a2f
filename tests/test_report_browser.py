"""Render the report in headless Chromium and check that every chart drew (DESIGN §6).

Needs a `chromium` (or chromium-browser / google-chrome) binary: `apt-get install -y chromium`
(see .ci/run). Skipped, with the reason, only where none can be found.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_report import CHARTS, built_report  # noqa: F401  (session fixture)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str | None:
    return next((b for p in BROWSERS if (b := shutil.which(p))), None)


@pytest.mark.browser
def test_every_chart_draws_in_headless_chromium(built_report, tmp_path):  # noqa: F811
    exe = _browser()
    if exe is None:
        pytest.skip("no headless browser: install Debian's `chromium` (apt-get install -y "
                    "chromium) to run the rendering check")
    page = built_report / "index.html"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=20000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    errors = [ln for ln in console if re.search(r"error|Vega|WARN", ln, re.I)]
    assert not errors, errors
    for slug in CHARTS:
        m = re.search(rf'(<div[^>]*id="chart-{slug}"[^>]*>)(.*?)</div>\s*<p', dom, re.S)
        assert m, f"chart {slug} missing from the rendered page"
        assert 'data-rendered="ok"' in m.group(1), f"chart {slug} did not finish rendering"
        svg = re.search(r"<svg[^>]*>(.*?)</svg>", m.group(2), re.S)
        assert svg and len(svg.group(1)) > 1000 and "<path" in svg.group(1), \
            f"chart {slug} drew an empty SVG"
