#!/usr/bin/env bash
# Screenshot a built report in headless Chromium (Debian: apt-get install -y chromium), so a
# reviewer can look at what a browser shows: every chart drawn, fonts, the Findings.
# Usage: scripts/screenshot_report.sh [outputs/report/index.html] [out.png] [height_px]
set -euo pipefail
page="${1:-outputs/report/index.html}"
png="${2:-outputs/report/screenshot.png}"
height="${3:-7000}"
exe="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$exe" ] || { echo "Error: no chromium: apt-get install -y chromium" >&2; exit 1; }
[ -f "$page" ] || { echo "Error: $page does not exist (run: python3 cli.py report)" >&2; exit 1; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# the network flags keep Chromium from calling out (the page is self-contained);
# the virtual-time budget gives Vega time to draw before the capture
"$exe" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="1400,$height" \
  --virtual-time-budget=15000 --screenshot="$png" "file://$(realpath "$page")" 2>/dev/null
echo "$png"
