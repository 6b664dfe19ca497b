#!/usr/bin/env bash
# The DMC-100k table on one GPU machine in one call: six tasks (finger-spin, cartpole-swingup, reacher-easy,
# cheetah-run, walker-walk, cup-catch) x seeds 1-3 x {drqv2, drm}, 100k frames, preset `paper` (84x84, action
# repeat 2, the published per-task settings), fp32, 10 evaluation episodes, under a wall-clock deadline so that
# whatever was reached is evaluated and summarised into $OUT before the call's limit.
#
# Prepare once, here (network needed; .whl/ and .gl/ are git-ignored and travel as `carry`):
#     scripts/device_wheels.sh
# Then, with the project's device tool, ONE call (check `status` first: budget_left_s must cover the machine's
# start, 1-2 min, plus timeout_s; a machine starts only with 4+ minutes left):
#     run(command="bash benchmarks/gpu_dmc100k.sh", carry=[".whl", ".gl"], timeout_s=600)
# The script ends by itself after DMC_BUDGET_S = 570 s. With less device time left, shorten it to fit
# (budget_left_s - 150 s for the start and transfers, say), e.g.:
#     run(command="DMC_BUDGET_S=420 bash benchmarks/gpu_dmc100k.sh", carry=[".whl", ".gl"], timeout_s=480)
# A smoke of the same path (2 tasks, 1 seed, 20k frames, ends after 150 s) for a session that has device time to
# spare or wants only to check the machine; a 15-minute session cannot afford both it and the full call
# (start ~1.5 min + smoke ~3 min + full 10 min):
#     run(command="bash benchmarks/gpu_dmc100k.sh --quick", carry=[".whl", ".gl"], timeout_s=210)
# A broken machine (no GPU, no EGL, a missing package) fails the preflight within ~1 minute, before any training.
# Then commit what came back: $OUT/dmc_sample_efficiency_<gpu>.json -> benchmarks/results/, and the figures.
#
# What it does: (1) unpacks the EGL / GL loader .debs of .gl into / (device machine only), (2) installs the wheels
# of .whl into /tmp/site (skipped when the same wheels are there already) and puts it and src/ on PYTHONPATH
# (pixelrl itself runs from the checkout, no install), (3) prints nvidia-smi, Python, torch, mujoco versions and
# runs a preflight (CUDA matmul, one EGL-rendered DMC frame through pixelrl.envs.make) so a broken machine fails in
# seconds, (4) starts CUDA MPS when the machine has it and a CUDA check passes under it, (5) runs
# benchmarks/dmc_sample_efficiency.py --batch-seeds with --deadline-min: every run gets a time budget that ends
# it at an episode boundary with its final evaluation; a run the deadline cuts is scored where it stopped and
# marked "(at Nk)" in table.md; (6) if that still overruns, `timeout` stops it and --summarize-only writes the table
# from whatever eval.csv rows exist; (7) copies to $OUT (at most 8 files come back): log.txt, the result JSON,
# table.md, curves.png, iqm.png, runs.tar.gz (every run's eval.csv / train.csv / summary / config / logs), gpu.csv.
#
# Parallelism on the 16-core machine: every process starts at once (drqv2's 3 seeds of a task are one batched
# process, --batch-seeds; drm runs one process per seed: 6 + 18 = 24 processes). The deadline ends all runs at the
# same wall time, so a queue would only starve the runs at its end. 24 trainers (plus their async env workers) on
# 16 cores is oversubscribed, but a trainer spends most of its time waiting on the GPU, and the env worker
# renders while the update runs; --threads 1 (and OMP/MKL 1) because the math is on the GPU: more CPU threads per
# process would only fight over the cores. MPS lets the 24 CUDA contexts run kernels concurrently instead of
# time-slicing (the earlier 8-run H100 partial run used it too).
#
# Settings (environment variables; defaults are the full configuration):
#   DMC_BUDGET_S   wall seconds for the whole script (default 570; --quick 150), the training deadline is what is
#                  left of it after set-up, less DMC_SUMMARY_S (default 35) for the summary and copies
#   DMC_AGENTS DMC_TASKS DMC_SEEDS DMC_FRAMES DMC_EVAL_EPISODES DMC_EVAL_EVERY DMC_PRESET DMC_PARALLEL
#   DMC_THREADS DMC_EXTRA (flags for every run; default: --no-eval-random --checkpoint-every-frames 1000000000)
#   DMC_DEVICE     cuda (default) or cpu; DMC_SETUP=0 skips the .gl / .whl steps (default: 1 with cuda),
#                  DMC_SETUP=whl installs the wheels only (into DMC_SITE, default /tmp/site; never unpacks into /)
#   DMC_MPS        auto (default) / 0;  DMC_DEADLINE=0 leaves the deadline out (then only `timeout` guards)
#   DMC_MARGIN_S   seconds of each run's time budget kept for its start-up and final evaluation (default 90;
#                  --quick 30), DMC_MIN_RUN_S: no run starts with less training time than this (60; --quick 20)
#   PYTHON         interpreter (default python3);  OUT  where results go (the device tool sets it)
# A dry run of the logic on a CPU (no GPU steps, tiny budget), from the repository root:
#   OUT=/tmp/out PYTHON=.venv/bin/python DMC_DEVICE=cpu DMC_PRESET=cpu-fast DMC_FRAMES=2000 \
#     bash benchmarks/gpu_dmc100k.sh --quick
set -uo pipefail
T_START=$(date +%s)
cd "$(dirname "$0")/.."
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

OUT=${OUT:-/tmp/gpu_dmc100k_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

PY=${PYTHON:-python3}
DEVICE=${DMC_DEVICE:-cuda}
SETUP=${DMC_SETUP:-$([[ $DEVICE == cuda* ]] && echo 1 || echo 0)}
if ((QUICK)); then
  AGENTS=${DMC_AGENTS:-drqv2 drm}; TASKS=${DMC_TASKS:-cartpole-swingup walker-walk}; SEEDS=${DMC_SEEDS:-1}
  FRAMES=${DMC_FRAMES:-20000}; EVAL_EPISODES=${DMC_EVAL_EPISODES:-2}; BUDGET_S=${DMC_BUDGET_S:-150}
  MARGIN_S=${DMC_MARGIN_S:-30}; MIN_RUN_S=${DMC_MIN_RUN_S:-20}; OUT_DIR=${DMC_OUT_DIR:-/tmp/dmc_quick}; TAG=_quick
else
  AGENTS=${DMC_AGENTS:-drqv2 drm}
  TASKS=${DMC_TASKS:-finger-spin cartpole-swingup reacher-easy cheetah-run walker-walk cup-catch}
  SEEDS=${DMC_SEEDS:-1 2 3}; FRAMES=${DMC_FRAMES:-100000}; EVAL_EPISODES=${DMC_EVAL_EPISODES:-10}
  BUDGET_S=${DMC_BUDGET_S:-570}; MARGIN_S=${DMC_MARGIN_S:-90}; MIN_RUN_S=${DMC_MIN_RUN_S:-60}
  OUT_DIR=${DMC_OUT_DIR:-/tmp/dmc}; TAG=
fi
EVAL_EVERY=${DMC_EVAL_EVERY:-$((FRAMES / 4))}
PRESET=${DMC_PRESET:-paper}
THREADS=${DMC_THREADS:-1}
# no random-policy evaluation at frame 0 (10 episodes per run before any training), and one checkpoint (at the
# end) instead of one after every evaluation: a run of this call is never resumed (the machine starts bare)
EXTRA=${DMC_EXTRA:---no-eval-random --checkpoint-every-frames 1000000000}
SUMMARY_S=${DMC_SUMMARY_S:-35}
read -ra AGENT_LIST <<<"$AGENTS"; read -ra TASK_LIST <<<"$TASKS"; read -ra SEED_LIST <<<"$SEEDS"
# an upper bound on the processes (fewer with --batch-seeds): all start at once, see the header
PARALLEL=${DMC_PARALLEL:-$((${#AGENT_LIST[@]} * ${#TASK_LIST[@]} * ${#SEED_LIST[@]}))}
elapsed() { echo $(($(date +%s) - T_START)); }
say() { echo "[gpu_dmc100k $(elapsed)s] $*"; }

say "mode $([[ $QUICK == 1 ]] && echo quick || echo full): agents [$AGENTS] tasks [$TASKS] seeds [$SEEDS]" \
    "frames $FRAMES preset $PRESET device $DEVICE budget ${BUDGET_S}s out $OUT"

# ---- (1) EGL / GL loaders, (2) wheels: device machine only ---------------------------------------------------
SITE=${DMC_SITE:-/tmp/site}
if [[ $SETUP == 1 ]]; then
  if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    say "no .gl/*.deb (run scripts/device_wheels.sh here and carry .gl); relying on the image's GL libraries"
  fi
  nv_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  if [[ -f $nv_egl && ! -f /usr/share/glvnd/egl_vendor.d/10_nvidia.json ]]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=$nv_egl
  fi
fi
source benchmarks/_wheels.sh
if [[ $SETUP == 1 || $SETUP == whl ]]; then
  if install_wheels .whl "$SITE"; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    say "no .whl/*.whl (run scripts/device_wheels.sh here and carry .whl)"
  fi
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export PIXELRL_PRECISION=${PIXELRL_PRECISION:-fp32}  # what precision "auto" resolves to in every run

# ---- (3) versions and preflight ------------------------------------------------------------------------------
GPU_NAME=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
fi
case "$GPU_NAME" in *H100*) GPU_TAG=h100 ;; *H200*) GPU_TAG=h200 ;; "") GPU_TAG=$DEVICE ;; *) GPU_TAG=gpu ;; esac
RESULT=$OUT/dmc_sample_efficiency_${GPU_TAG}${TAG}.json
echo "cpus: $(nproc) usable of $(nproc --all), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

preflight() {
  timeout 120 "$PY" - "$DEVICE" <<'EOF'
import sys, time, platform
t0 = time.time()
import numpy, torch, mujoco, dm_control, gymnasium, tyro
import pixelrl
from pixelrl.envs import make
dev = sys.argv[1]
print(f"python {platform.python_version()} torch {torch.__version__} cuda {torch.version.cuda} numpy "
      f"{numpy.__version__} mujoco {mujoco.__version__} gymnasium {gymnasium.__version__} tyro {tyro.__version__} "
      f"pixelrl {getattr(pixelrl, '__version__', '?')}")
if dev.startswith("cuda"):
    x = torch.randn(1024, 1024, device=dev)
    torch.cuda.synchronize()
    print(f"cuda ok: {torch.cuda.get_device_name(0)}, matmul sum {float((x @ x).sum()):.1f}")
env = make("dmc/cartpole-swingup", seed=0)
obs, _ = env.reset(seed=0)
obs, *_ = env.step(env.action_space.sample())
print(f"env ok: dmc/cartpole-swingup obs {getattr(obs, 'shape', '?')} {getattr(obs, 'dtype', '')} "
      f"(MUJOCO_GL egl), preflight {time.time() - t0:.1f}s")
env.close()
EOF
}

# ---- (4) CUDA MPS --------------------------------------------------------------------------------------------
MPS_ON=0
stop_mps() { ((MPS_ON)) && { echo quit | nvidia-cuda-mps-control; MPS_ON=0; say "MPS stopped"; }; return 0; }
GPU_LOG_PID=
cleanup() { stop_mps; [[ -n $GPU_LOG_PID ]] && kill "$GPU_LOG_PID" 2>/dev/null; return 0; }
trap cleanup EXIT
if [[ $DEVICE == cuda* && ${DMC_MPS:-auto} != 0 ]] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps CUDA_MPS_LOG_DIRECTORY=/tmp/nvidia-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    MPS_ON=1
    say "MPS daemon started"
  else
    say "MPS daemon did not start; continuing without"
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
if ! preflight; then
  if ((MPS_ON)); then
    say "preflight failed under MPS: stopping MPS and trying once more without it"
    stop_mps
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    preflight || { say "ERROR: preflight failed (see above); nothing was trained"; exit 1; }
  else
    say "ERROR: preflight failed (see above); nothing was trained"
    exit 1
  fi
fi
say "preflight done (MPS $([[ $MPS_ON == 1 ]] && echo on || echo off))"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 15 >"$OUT/gpu.csv" &
  GPU_LOG_PID=$!
fi

# ---- (5) the benchmark under the deadline, (6) the guard -----------------------------------------------------
LEFT_S=$((BUDGET_S - $(elapsed) - SUMMARY_S))
if ((LEFT_S < MARGIN_S + MIN_RUN_S)); then
  say "ERROR: only ${LEFT_S}s left for training after set-up (DMC_BUDGET_S=$BUDGET_S); nothing was trained"
  exit 1
fi
ARGS=(benchmarks/dmc_sample_efficiency.py --agents "${AGENT_LIST[@]}" --tasks "${TASK_LIST[@]}"
      --seeds "${SEED_LIST[@]}" --frames "$FRAMES" --batch-seeds --preset "$PRESET" --device "$DEVICE"
      --parallel "$PARALLEL" --threads "$THREADS" --eval-every-frames "$EVAL_EVERY"
      --eval-episodes "$EVAL_EPISODES" --out-dir "$OUT_DIR" --result "$RESULT" --report-every 30)
[[ -n $EXTRA ]] && ARGS+=("--extra=$EXTRA")  # (= form: the value starts with --)
DEADLINE=()
[[ ${DMC_DEADLINE:-1} != 0 ]] && DEADLINE=(--deadline-min "$(echo "$LEFT_S / 60" | bc -l | cut -c1-6)"
                                           --deadline-margin-s "$MARGIN_S" --min-run-s "$MIN_RUN_S")
say "training for at most ${LEFT_S}s: $PY ${ARGS[*]} ${DEADLINE[*]}"
# the benchmark's own deadline ends the runs; `timeout` (whole process group: the runs too) is the backstop
T_TRAIN=$(date +%s)
timeout -k 5 $((LEFT_S + 20)) "$PY" "${ARGS[@]}" "${DEADLINE[@]}"
rc=$?
TRAIN_WALL_S=$(($(date +%s) - T_TRAIN))
if ((rc != 0)); then
  say "benchmark exited with $rc ($([[ $rc == 124 || $rc == 137 ]] && echo "stopped by the guard" || echo error));" \
      "summarising what finished"
  timeout 60 "$PY" "${ARGS[@]}" --summarize-only || say "summary failed"
fi
stop_mps
# what the machine delivered: per-run env frames and frames/s (train.csv), the aggregate over the training wall
"$PY" - "$OUT_DIR" "$TRAIN_WALL_S" "$FRAMES" <<'EOF' || true
import csv, pathlib, sys
root, wall, target = pathlib.Path(sys.argv[1]), max(float(sys.argv[2]), 1.0), int(sys.argv[3])
rows = []
for f in sorted(root.glob("**/train.csv")):
    with open(f, newline="") as fh:
        r = list(csv.DictReader(fh))
    if r:
        frames, ws = float(r[-1]["frames"]), float(r[-1].get("wall_s") or 0)
        rows.append((str(f.parent.relative_to(root)), frames, frames / ws if ws > 0 else 0.0))
for name, frames, fps in rows:
    print(f"  {name:40s} {frames / 1000:6.1f}k frames  {fps:6.1f} frames/s")
total = sum(f for _, f, _ in rows)
print(f"throughput: {len(rows)} runs, {total / 1000:.1f}k env frames in all, {total / wall:.0f} frames/s aggregate over "
      f"the benchmark's {wall:.0f} s (all runs to {target:,} frames would need {len(rows) * target / wall:.0f})")
EOF

# ---- (7) copy back (at most 8 files) -------------------------------------------------------------------------
for f in table.md curves.png iqm.png; do [[ -f $OUT_DIR/$f ]] && cp "$OUT_DIR/$f" "$OUT/"; done
if [[ -d $OUT_DIR ]]; then
  (cd "$OUT_DIR" && find . \( -name eval.csv -o -name summary.json -o -name config.json -o -name batch.json \
      -o -name train.csv -o -name '*.log' \) -print0 | tar czf "$OUT/runs.tar.gz" --null -T -)
fi
say "done; files in $OUT:"
ls -la "$OUT"
[[ -f $RESULT ]] || { say "ERROR: no result JSON"; exit 1; }
