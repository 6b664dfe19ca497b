#!/usr/bin/env bash
# The wheel as a user gets it: builds the sdist and wheel (python -m build), installs 'pixelrl[dmc] @ <wheel>' into
# a fresh virtual environment that sees nothing of .venv or src/, and runs a tiny `pixelrl train` from another
# folder: 1000 frames of 32 px cartpole with a tiny network (a few dozen updates), enough to go through every layer
# (env worker, replay, update, evaluation, checkpoint, video, TensorBoard, curve) in well under a minute. CI runs it
# (.ci/run); it prints the time of each step.
#
#   bash scripts/wheel_smoke.sh              # build into dist/, then install and run
#   WHEEL=dist/pixelrl-0.1.0-py3-none-any.whl bash scripts/wheel_smoke.sh   # skip the build
#   WHEEL_SMOKE_DIR=/tmp/smoke bash scripts/wheel_smoke.sh   # keep the venv, the build log and the run folder there
#
# The clean venv is made with uv when .venv has it (the dev extra; ~20 s cold, ~7 s with its cache warm), else with
# venv + pip (~2.5 min on 2 cores). torch is pinned to the version .venv has, so a CPU-only machine installs the
# CPU build from the same place scripts/setup.sh got it (pip's find-links), not the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
export MUJOCO_GL=${MUJOCO_GL:-egl}

[ -x "$VENV/bin/python" ] || { echo "wheel_smoke: no $VENV/bin/python: run make setup first (or set VENV)" >&2; exit 1; }
OUT=${WHEEL_SMOKE_DIR:-$(mktemp -d /tmp/pixelrl-wheel-smoke.XXXXXX)}
mkdir -p "$OUT"
[ -n "${WHEEL_SMOKE_DIR:-}" ] || trap 'rm -rf "$OUT"' EXIT  # the venv is ~1.7 GB; keep it only when asked to
log() { printf '\033[1;34m[wheel]\033[0m %s\n' "$*"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$1" "$(now)"; }

# 1. sdist + wheel (build's isolated environment, as a user's `python -m build` runs it)
if [ -z "${WHEEL:-}" ]; then
  t=$(now)
  rm -rf dist
  "$VENV/bin/python" -m build --outdir dist . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  WHEEL=$(ls dist/pixelrl-*.whl)
  log "built $(ls dist | tr '\n' ' ')in $(since "$t")"
fi
[ -f "$WHEEL" ] || { echo "wheel_smoke: no such wheel: $WHEEL (unset WHEEL to build one)" >&2; exit 1; }
WHEEL=$(realpath "$WHEEL")

# 2. a fresh venv with the wheel and the dmc extra (nothing from .venv: no --system-site-packages, no editable src/)
t=$(now)
TORCH=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
find_links=()
for dir in $("$VENV/bin/python" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p" | sort -u); do
  find_links+=(--find-links "$dir")
done
if [ -x "$VENV/bin/uv" ]; then
  "$VENV/bin/uv" venv -q -p "$VENV/bin/python" "$OUT/venv"
  "$VENV/bin/uv" pip install -q --python "$OUT/venv/bin/python" "${find_links[@]}" "torch==$TORCH" \
    "pixelrl[dmc] @ file://$WHEEL"
else
  "$VENV/bin/python" -m venv "$OUT/venv"
  "$OUT/venv/bin/python" -m pip install -q "torch==$TORCH" "pixelrl[dmc] @ file://$WHEEL"
fi
log "installed pixelrl[dmc] from $(basename "$WHEEL") (torch $TORCH) into a clean venv in $(since "$t")"

# 3. run it from a folder that is not the repository, so only the installed package can be imported
t=$(now)
cd "$OUT"
"$OUT/venv/bin/python" - <<'EOF'
import pixelrl, sys
from importlib import resources
assert "site-packages" in pixelrl.__file__, f"pixelrl imported from {pixelrl.__file__}, not from the installed wheel"
for name in ("index.html", "label.css", "label.js"):  # the labelling page: package data
    assert resources.files("pixelrl.web").joinpath("static", name).read_bytes(), name
print(f"pixelrl {pixelrl.__version__} from {pixelrl.__file__}")
EOF
"$OUT/venv/bin/pixelrl" --version
"$OUT/venv/bin/pixelrl" train --env dmc/cartpole-swingup --preset none --size 32 --action-repeat 8 --fast-render \
  --frames 1000 --eval-every-frames 1000 --eval-episodes 1 --no-eval-random --threads 1 --device cpu --no-progress \
  --agent.batch-size 16 --agent.hidden-dim 16 --agent.feature-dim 8 --agent.encoder-channels 4 4 4 4 \
  --agent.num-seed-steps 60 --agent.precision fp32 --run-dir "$OUT/run"
"$OUT/venv/bin/python" - "$OUT/run" <<'EOF'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "eval.csv")))
assert [int(r["frames"]) for r in rows] == [0, 1000], rows
train = list(csv.DictReader(open(run / "train.csv")))
assert train and any(k.startswith("critic") for k in train[-1]), "no update logged in train.csv"
for p in ("config.json", "summary.json", "curve.png", "checkpoints", "tb", "videos/eval_frames_000001000.mp4"):
    assert (run / p).exists(), f"{p} missing from the run folder"
json.loads((run / "summary.json").read_text())
print(f"run folder complete: {sorted(p.name for p in run.iterdir())}")
EOF
log "pixelrl train (1000 frames) from the installed wheel in $(since "$t")"
cd "$ROOT"
