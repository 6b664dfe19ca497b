#!/usr/bin/env bash
# Issue 19's GPU benchmark of RL fine-tuning of image generators, in one call of the device tool: train the small
# one-shape generator, distil its consistency model and train the shapes verifier, then DDPO and RLCM on JPEG
# compressibility and GRPO on the verifier at the authors' full batches (all 8 GPUs' worth on one), at the same time,
# each under a time budget; records reward vs wall time and the throughput (images/s, samples per update).
#
# Prepare once, here (network needed; .whl/ is git-ignored and travels as `carry`; it holds diffusers and pixelrl's
# CLI requirements; torch, transformers, peft, accelerate, huggingface-hub are the image's):
#     scripts/device_wheels.sh
# Then ONE call (check `status` first: budget_left_s must cover the machine's start, 1-2 min, plus timeout_s):
#     run(command="bash benchmarks/gpu_genrl.sh", carry=[".whl"], timeout_s=600)
# The script ends by itself after GENRL_BUDGET_S = 540 s. With less device time left, shorten it (budget_left_s
# - 150 s for the start and transfers), e.g. run(command="GENRL_BUDGET_S=400 bash benchmarks/gpu_genrl.sh", ...,
# timeout_s=440): the model phase keeps its GENRL_MODELS_S and the RL arms get less. A smoke of the same path (tiny
# models and batches, 240 s): bash benchmarks/gpu_genrl.sh --quick (timeout_s=280).
# Then commit what came back: $OUT/genrl_gpu_<gpu>.json and .png -> benchmarks/results/ (docs/genrl.md, "On a GPU").
#
# What it does: (1) installs the wheels of .whl into /tmp/site, as benchmarks/gpu_dmc100k.sh does (skipped when the
# same wheels are there), and puts it and src/ on PYTHONPATH (pixelrl runs from the checkout); (2) prints versions
# and runs a preflight: one `pixelrl genrl train` epoch of a tiny random generator on the device (diffusers, peft,
# CUDA), so a broken machine fails within a minute, then the three model commands at tiny sizes on the device (if
# they fail there, a warning says why and step 3 builds the models on the CPU, recorded as model_device in the
# settings); (3) the models, each command with `--device GENRL_DEVICE` (the GPU; the training images are rendered
# and the noise drawn on the CPU and moved per batch, so the same seeds give the same data as on a CPU):
# pretrain-generator --task one-shape (GENRL_GEN_STEPS 1000: the one-shape generator learns its task between 500
# and 1000 steps, docs/genrl_models.md), checkpointed every 100 steps and stopped by `timeout` if it overruns (the
# last export is then used, its steps are recorded), then distill (GENRL_DISTILL_STEPS 300, as the committed CPU
# results); the verifier (pretrain-verifier --task one-shape, 2000 steps, the blur / jitter
# / noise augmentation and count threshold 0.3 of the `ver2t` verifier measured in docs/genrl.md) trains beside the
# generator on the same GPU. GENRL_MODELS_S (225 s) is a cap, not a reservation: the arms start when the models are
# done and get the rest of the budget. The cap was sized for the machine's CPU cores (1 thread on a shared core here:
# ~0.65 s per generator step, ~0.7 s per distillation step, ~0.1 s per verifier step, assumed ~4x faster on 8-12
# idle threads), so on the GPU it is a generous guard. What stays on the CPU per step, measured here on one busy
# core: rendering 32 one-shape images ~13 ms (16 for a distillation step ~6 ms), the verifier's augmentation of 64
# images ~2 ms, its 8000-image pool ~4 s once; the GPU side of a step of these small models (about a million
# parameters, 32x32 images) is bound by kernel launches, tens of ms at a guess. Not measured on the device machine:
# the phase's wall times are recorded (phases, in the result) for the next sizing. Torch's CPU threads per command:
# GENRL_GEN_THREADS, GENRL_DISTILL_THREADS, GENRL_VER_THREADS (2 each with cuda, where the CPU only converts and
# augments batches; 11, 12 and 4 with cpu). GENRL_MODELS=DIR (generator/, lcm/, verifier/ in it, e.g. carried) skips
# the phase.
# (4) the arms, each a `benchmarks/genrl_cpu.py --arms NAME --device cuda` process with one CPU thread, all started
# at once (the small model leaves the GPU mostly idle; no MPS), each with `--minutes` = what is left of the budget
# less GENRL_ARM_MARGIN_S (start-up, the epoch that crosses the budget, the checkpoint) and GENRL_SUMMARY_S:
#   ddpo-jpeg      DDPO's 50 DDIM steps, eta 1, guidance; 4 batches of 64 = 256 images per epoch and 64 per update
#                  (DDPO's config/dgx.py on its 8 GPUs: 8 x 4 x 8 images, 4 x accumulation 2 x 8 per update)
#   rlcm-jpeg      RLCM's 8 LCM steps, the same 256 images per epoch and 64 per update (our choice, so that the two
#                  compare; RLCM's per-GPU config is 4 x 10 images, updates of 2 x 2)
#   grpo-verifier  groups of 8 (Visual-RFT's G), 20 DDIM steps without guidance (GENRL_GRPO_GUIDANCE 1: the sampler
#                  of the committed one-shape GRPO runs), 256 images (32 groups) and one update per epoch
#                  (accumulation 4), as the CPU run with 64 images per update did, 4 times larger
#   jpeg arms `--no-lora --lr 2e-5`, GRPO `--no-lora --lr 4e-5` (the committed CPU runs' settings: LoRA on the small
#   generator's few attention layers barely moves it)
# (5) merges the arms into one result (genrl_cpu.py's goals and plot; per arm: images, epochs, updates, training
# wall, images/s overall and after the first epoch, sampling images/s, samples per update, the device each run
# resolved) and (6) copies to $OUT (at most 8 files come back): log.txt, genrl_gpu_<gpu>.json, genrl_gpu_<gpu>.png,
# genrl_gpu_<gpu>_samples.png (the pretrained generator, 8 images per prompt), gpu.csv, runs.tar.gz (every run's
# train.csv / config.json / log, the model commands' logs and summaries, the per-arm JSONs).
#
# A Stable Diffusion-sized pipeline in a local folder (none can travel in a call's 64 MiB, and the device machine
# has no network, so this path is not exercised here): GENRL_SD_MODEL=DIR skips the model phase and runs ddpo-jpeg
# on it (`pixelrl genrl train`, DDPO's per-GPU batches: 8 x 4 images, updates of 4 x 2, LoRA, 50 steps) and, with
# GENRL_SD_LCM=DIR (an LCM such as LCM_Dreamshaper_v7), rlcm-jpeg (RLCM's per-GPU 4 x 10, updates of 2 x 2), with
# 15 animal names as prompts (DDPO's compressibility task prompts with its 45 simple animals).
#
# Settings (environment variables; defaults are the full configuration):
#   GENRL_BUDGET_S     wall seconds for the whole script (540; --quick 240)
#   GENRL_MODELS_S     wall seconds of the model phase (225; --quick 110);  GENRL_MODELS  prebuilt models (above)
#   GENRL_GEN_STEPS (1000) GENRL_GEN_THREADS (2; cpu 11)  GENRL_DISTILL_STEPS (300) GENRL_DISTILL_THREADS (2; cpu 12)
#   GENRL_DISTILL_S    (75; --quick 45): the seconds of the model phase kept for the distillation
#   GENRL_VER_STEPS (2000) GENRL_VER_POOL (8000) GENRL_VER_THREADS (2; cpu 4)
#   GENRL_VER_ARGS     (--blur 2.0 --jitter 0.3 --noise 0.1 --count-threshold 0.3)
#   GENRL_ARMS         (ddpo-jpeg rlcm-jpeg grpo-verifier);  GENRL_BATCH (64) GENRL_BATCHES (4) GENRL_GROUP (8)
#   GENRL_DDPO_STEPS (50) GENRL_DDIM_STEPS (20);  GENRL_JPEG_ARGS (--no-lora --lr 2e-5) GENRL_GRPO_ARGS
#   (--no-lora --lr 4e-5): more `pixelrl genrl train` options per arm
#   GENRL_ARM_MARGIN_S (60; --quick 45), GENRL_SUMMARY_S (30), GENRL_MIN_ARM_MIN (1.0; --quick 0.2): no arm starts
#                      with a smaller budget (minutes)
#   GENRL_DEVICE       cuda (default) or cpu (a dry run): the models and the arms;  GENRL_SETUP 0 skips the wheels
#                      (default 1 with cuda)
#   GENRL_WHEELS (.whl) GENRL_SITE (/tmp/site) GENRL_WORK (/tmp/genrl_gpu);  PYTHON (python3);  OUT (the tool's)
# A dry run on a CPU (tiny models and batches; on 2 busy shared cores the arms got 0.6 to 1.5 min each and the
# generator may stop at its guard, its last export then used), from the repository root:
#   OUT=/tmp/out PYTHON=.venv/bin/python GENRL_DEVICE=cpu nice -n 10 bash benchmarks/gpu_genrl.sh --quick
set -uo pipefail
T_START=$(date +%s)
cd "$(dirname "$0")/.."
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

OUT=${OUT:-/tmp/gpu_genrl_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

PY=${PYTHON:-python3}
DEVICE=${GENRL_DEVICE:-cuda}
SETUP=${GENRL_SETUP:-$([[ $DEVICE == cuda* ]] && echo 1 || echo 0)}
W=${GENRL_WORK:-/tmp/genrl_gpu}
if ((QUICK)); then
  BUDGET_S=${GENRL_BUDGET_S:-240}; MODELS_S=${GENRL_MODELS_S:-110}; GEN_STEPS=${GENRL_GEN_STEPS:-20}
  DISTILL_STEPS=${GENRL_DISTILL_STEPS:-10}; VER_STEPS=${GENRL_VER_STEPS:-60}; VER_POOL=${GENRL_VER_POOL:-1000}
  BATCH=${GENRL_BATCH:-4}; BATCHES=${GENRL_BATCHES:-1}; GROUP=${GENRL_GROUP:-4}; DDPO_STEPS=${GENRL_DDPO_STEPS:-4}
  DDIM_STEPS=${GENRL_DDIM_STEPS:-4}; ARM_MARGIN_S=${GENRL_ARM_MARGIN_S:-45}; MIN_ARM_MIN=${GENRL_MIN_ARM_MIN:-0.2}
  DISTILL_S=${GENRL_DISTILL_S:-45}; CK=5; TAG=_quick
else
  BUDGET_S=${GENRL_BUDGET_S:-540}; MODELS_S=${GENRL_MODELS_S:-225}; GEN_STEPS=${GENRL_GEN_STEPS:-1000}
  DISTILL_STEPS=${GENRL_DISTILL_STEPS:-300}; VER_STEPS=${GENRL_VER_STEPS:-2000}; VER_POOL=${GENRL_VER_POOL:-8000}
  BATCH=${GENRL_BATCH:-64}; BATCHES=${GENRL_BATCHES:-4}; GROUP=${GENRL_GROUP:-8}; DDPO_STEPS=${GENRL_DDPO_STEPS:-50}
  DDIM_STEPS=${GENRL_DDIM_STEPS:-20}; ARM_MARGIN_S=${GENRL_ARM_MARGIN_S:-60}; MIN_ARM_MIN=${GENRL_MIN_ARM_MIN:-1.0}
  DISTILL_S=${GENRL_DISTILL_S:-75}; CK=100; TAG=
fi
VER_ARGS=${GENRL_VER_ARGS:---blur 2.0 --jitter 0.3 --noise 0.1 --count-threshold 0.3}
ARMS=${GENRL_ARMS:-ddpo-jpeg rlcm-jpeg grpo-verifier}
JPEG_ARGS=${GENRL_JPEG_ARGS:---no-lora --lr 2e-5}; GRPO_ARGS=${GENRL_GRPO_ARGS:---no-lora --lr 4e-5}
GRPO_GUIDANCE=${GENRL_GRPO_GUIDANCE:-1}
SUMMARY_S=${GENRL_SUMMARY_S:-30}
SD=${GENRL_SD_MODEL:-}; SD_LCM=${GENRL_SD_LCM:-}
elapsed() { echo $(($(date +%s) - T_START)); }
say() { echo "[gpu_genrl $(elapsed)s] $*"; }
say "mode $([[ $QUICK == 1 ]] && echo quick || echo full): device $DEVICE budget ${BUDGET_S}s (models ${MODELS_S}s)" \
    "arms [$ARMS] out $OUT work $W${SD:+ sd $SD}"
rm -rf "$W"; mkdir -p "$W"

# ---- (1) wheels (benchmarks/_wheels.sh: --no-deps into a site folder, stamped) -----------------------------
WHL=${GENRL_WHEELS:-.whl}; SITE=${GENRL_SITE:-/tmp/site}
source benchmarks/_wheels.sh
if [[ $SETUP == 1 ]]; then
  if install_wheels "$WHL" "$SITE"; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    say "no $WHL/*.whl (run scripts/device_wheels.sh here and carry .whl); relying on the image's packages"
  fi
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MUJOCO_GL=${MUJOCO_GL:-egl}

# ---- (2) versions and preflight -----------------------------------------------------------------------------
GPU_NAME=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
fi
case "$GPU_NAME" in *H100*) GPU_TAG=h100 ;; *H200*) GPU_TAG=h200 ;; "") GPU_TAG=$DEVICE ;; *) GPU_TAG=gpu ;; esac
RESULT=$OUT/genrl_gpu_${GPU_TAG}${TAG}.json
echo "cpus: $(nproc) usable, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
if ! timeout 150 "$PY" - "$DEVICE" "$W/preflight" <<'EOF'; then
import platform, subprocess, sys, time
t0 = time.time()
import diffusers, peft, torch, transformers, tyro
from pixelrl.genrl.generator import init_generator
dev, work = sys.argv[1], sys.argv[2]
print(f"python {platform.python_version()} torch {torch.__version__} cuda {torch.version.cuda} diffusers "
      f"{diffusers.__version__} peft {peft.__version__} transformers {transformers.__version__} "
      f"tyro {tyro.__version__}")
if dev.startswith("cuda"):
    x = torch.randn(1024, 1024, device=dev)
    print(f"cuda ok: {torch.cuda.get_device_name(0)}, matmul sum {float((x @ x).sum()):.1f}")
init_generator(f"{work}/tiny", size="tiny")
open(f"{work}/prompts.txt", "w").write("one red circle\n")
cmd = [sys.executable, "-m", "pixelrl.cli.main", "genrl", "train", "--model", f"{work}/tiny", "--prompts",
       f"{work}/prompts.txt", "--out", f"{work}/run", "--epochs", "1", "--steps", "2", "--sample-batch-size", "2",
       "--sample-batches", "1", "--train-batch-size", "2", "--grad-accum", "1", "--device", dev, "--threads", "1",
       "--no-progress", "--no-export"]
r = subprocess.run(cmd, capture_output=True, text=True)
if r.returncode:
    sys.exit(f"genrl train on {dev} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
print(f"genrl train ok: one epoch of a tiny generator on {dev}, preflight {time.time() - t0:.1f}s")
try:  # the model commands on the device (tiny sizes); on failure the model phase falls back to the CPU
    from pixelrl.genrl.generator import distill_consistency, load_components, train_generator
    from pixelrl.genrl.rewards import VerifierConfig, load_detector, train_verifier
    t1, q = time.time(), dict(progress=False, log=lambda s: None)
    g = train_generator(f"{work}/gen", size="tiny", image_size=16, batch_size=4, steps=2, warmup_steps=1,
                        device=dev, **q)
    d = distill_consistency(f"{work}/gen", f"{work}/lcm", steps=1, batch_size=2, time_cond_proj_dim=16, device=dev,
                            **q)
    v = train_verifier(f"{work}/ver", VerifierConfig(steps=2, batch_size=8, pool_images=32, eval_images=16, width=4,
                                                     blur=1.0, jitter=0.2, device=dev), progress=False)
    load_components(f"{work}/lcm"), load_detector(f"{work}/ver")  # the folders written load on the CPU
    print(f"model commands ok on {g['device']} / {d['device']} / {v['device']} ({time.time() - t1:.1f}s)")
    open(f"{work}/models_device_ok", "w").write(dev)
except Exception as e:
    print(f"WARNING: the model commands failed on {dev} ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); "
          "the models are built on the CPU")
EOF
  say "ERROR: preflight failed (see above); nothing was trained"
  exit 1
fi
MODEL_DEVICE=$DEVICE
[[ -f $W/preflight/models_device_ok ]] || MODEL_DEVICE=cpu  # (the preflight's warning says why)
if [[ $MODEL_DEVICE == cuda* ]]; then T_GEN=2 T_VER=2 T_DISTILL=2; else T_GEN=11 T_VER=4 T_DISTILL=12; fi
GEN_THREADS=${GENRL_GEN_THREADS:-$T_GEN}; VER_THREADS=${GENRL_VER_THREADS:-$T_VER}
DISTILL_THREADS=${GENRL_DISTILL_THREADS:-$T_DISTILL}
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 10 >"$OUT/gpu.csv" &
  GPU_LOG_PID=$!
  trap 'kill $GPU_LOG_PID 2>/dev/null' EXIT
fi

# ---- (3) the models -------------------------------------------------------------------------------------------
PHASES=$W/phases.tsv  # name, wall seconds, exit status (124: stopped by its guard)
phase() {  # phase NAME GUARD_S CMD...: run under `timeout`, log to $W/NAME.log, record the wall time and status
  local name=$1 guard=$2 t0 rc
  shift 2
  t0=$(date +%s)
  timeout -k 5 "$guard" "$@" >"$W/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" $(($(date +%s) - t0)) "$rc" >>"$PHASES"
  say "$name: exit $rc after $(($(date +%s) - t0))s$([[ $rc == 124 ]] && echo ' (stopped by its guard)')"
  tail -2 "$W/$name.log"
  return "$rc"
}
if [[ -n $SD ]]; then
  GEN=$SD; LCM=$SD_LCM; VER=
  ARMS="ddpo-jpeg${SD_LCM:+ rlcm-jpeg}"
  say "Stable Diffusion-sized pipeline $SD${SD_LCM:+ and LCM $SD_LCM}: no model phase; arms [$ARMS]"
elif [[ -n ${GENRL_MODELS:-} ]]; then
  GEN=$GENRL_MODELS/generator; LCM=$GENRL_MODELS/lcm; VER=$GENRL_MODELS/verifier
  say "prebuilt models in $GENRL_MODELS: no model phase"
else
  GEN=$W/models/generator; LCM=$W/models/lcm; VER=$W/models/verifier
  T_MODELS=$(date +%s)
  say "models on $MODEL_DEVICE: generator ($GEN_STEPS steps, $GEN_THREADS threads) then distillation ($DISTILL_STEPS" \
      "steps); the verifier ($VER_STEPS steps, $VER_THREADS threads) beside them; at most ${MODELS_S}s"
  phase pretrain-verifier "$MODELS_S" env OMP_NUM_THREADS="$VER_THREADS" "$PY" -m pixelrl.cli.main genrl \
    pretrain-verifier --out "$VER" --task one-shape --steps "$VER_STEPS" --pool-images "$VER_POOL" $VER_ARGS \
    --device "$MODEL_DEVICE" --no-progress &  # (the verifier command has no --threads: torch reads OMP_NUM_THREADS)
  VER_PID=$!
  phase pretrain-generator $((MODELS_S - DISTILL_S)) "$PY" -m pixelrl.cli.main genrl pretrain-generator \
    --out "$GEN" --task one-shape --steps "$GEN_STEPS" --threads "$GEN_THREADS" --device "$MODEL_DEVICE" \
    --checkpoint-every "$CK" --log-every "$CK" --no-progress
  left=$((MODELS_S - ($(date +%s) - T_MODELS)))
  if [[ -f $GEN/model_index.json ]] && ((left > 10)); then
    phase distill "$left" "$PY" -m pixelrl.cli.main genrl distill --teacher "$GEN" --out "$LCM" \
      --steps "$DISTILL_STEPS" --threads "$DISTILL_THREADS" --device "$MODEL_DEVICE" \
      --checkpoint-every $((CK / 2 > 0 ? CK / 2 : 1)) --log-every $((CK / 2 > 0 ? CK / 2 : 1)) --no-progress
  fi
  wait "$VER_PID"
  say "model phase done"
fi
for m in "$GEN" "$LCM" "$VER"; do [[ -n $m ]] && { ls "$m" >/dev/null 2>&1 || say "missing: $m"; }; done

# ---- (4) the arms, all at once ----------------------------------------------------------------------------------
LEFT_S=$((BUDGET_S - $(elapsed) - SUMMARY_S))
MIN=$(echo "($LEFT_S - $ARM_MARGIN_S) / 60" | bc -l | cut -c1-5)
if (($(echo "$MIN < $MIN_ARM_MIN" | bc -l))); then
  say "ERROR: only ${LEFT_S}s left for the arms (GENRL_BUDGET_S=$BUDGET_S); no RL was run"
  MIN=0
fi
B=(--batch "$BATCH" --batches "$BATCHES" --train-batch "$BATCH")
PIDS=() NAMES=()
launch() {  # launch ARM: one arm in the background, with its own work folder, JSON and log
  local arm=$1 a
  if [[ -n $SD ]]; then
    printf '%s\n' cat dog horse monkey rabbit zebra spider bird sheep deer cow goat lion tiger bear >"$W/sd_prompts.txt"
    if [[ $arm == ddpo-jpeg ]]; then a=(--model "$SD" --algo ddpo --sample-batch-size 8 --sample-batches 4
                                        --train-batch-size 4 --grad-accum 2)
    else a=(--model "$SD_LCM" --algo rlcm --sample-batch-size 4 --sample-batches 10 --train-batch-size 2
            --grad-accum 2); fi
    timeout -k 5 $((LEFT_S + 10)) "$PY" -m pixelrl.cli.main genrl train "${a[@]}" --reward jpeg-compressibility \
      --prompts "$W/sd_prompts.txt" --out "$W/$arm/runs/$arm" --epochs 100000 --time-budget-min "$MIN" \
      --threads 1 --device "$DEVICE" --no-progress --no-export >"$W/$arm.log" 2>&1 &
  else
    case $arm in
      ddpo-jpeg) a=("${B[@]}" --grad-accum 1 --ddpo-steps "$DDPO_STEPS" "--train-args=$JPEG_ARGS") ;;
      rlcm-jpeg) r="--sample-batch-size $BATCH --sample-batches $BATCHES --train-batch-size $BATCH --grad-accum 1"
                 a=("--train-args=$JPEG_ARGS $r") ;;  # after the arm's own 4 x 4 in genrl_cpu.py: the last wins
      grpo-verifier) a=("${B[@]}" --grad-accum "$BATCHES" --group-size "$GROUP" --ddim-steps "$DDIM_STEPS"
                        --guidance "$GRPO_GUIDANCE" "--train-args=$GRPO_ARGS") ;;
      *) a=("${B[@]}" --all) ;;  # prdp-jpeg, preference-jpeg, parrot-jpeg+verifier (genrl_cpu.py --all)
    esac
    timeout -k 5 $((LEFT_S + 10)) "$PY" benchmarks/genrl_cpu.py --generator "$GEN" --lcm "$LCM" --verifier "$VER" \
      --work "$W/$arm" --arms "$arm" --minutes "$MIN" --minutes-other "$MIN" --threads 1 --device "$DEVICE" \
      --out "$W/$arm.json" "${a[@]}" >"$W/$arm.log" 2>&1 &
  fi
  PIDS+=($!) NAMES+=("$arm")
  say "started $arm (pid $!, ${MIN} min)"
}
if [[ $MIN != 0 ]]; then
  T_ARMS=$(date +%s)
  for arm in $ARMS; do launch "$arm"; done
  if [[ -z $SD && -f $GEN/model_index.json ]]; then  # the pretrained generator's samples, on the CPU meanwhile
    prompts=()  # the one-shape task's 12 prompts, 8 images each, GRPO's sampler (20 DDIM steps, no guidance)
    for c in red green blue yellow; do for k in circle square triangle; do prompts+=("one $c $k"); done; done
    nice -n 5 timeout 120 "$PY" -m pixelrl.cli.main genrl samples --model "$GEN" --prompts "${prompts[@]}" \
      --per-prompt $((QUICK ? 2 : 8)) --steps 20 --guidance 1 --out "$OUT/genrl_gpu_${GPU_TAG}${TAG}_samples.png" \
      >"$W/samples.log" 2>&1 &
    PIDS+=($!) NAMES+=(samples)
  fi
  for i in "${!PIDS[@]}"; do wait "${PIDS[$i]}"; rc=$?; say "${NAMES[$i]}: exit $rc"; done  # (no bare `wait`:
  printf '%s\t%s\t%s\n' arms $(($(date +%s) - T_ARMS)) 0 >>"$PHASES"  # it would wait for tee and nvidia-smi too)
fi

# ---- (5) one result: goals, plot, throughput --------------------------------------------------------------------
SETTINGS=$(for v in QUICK MODEL_DEVICE MODELS_S GEN_STEPS GEN_THREADS DISTILL_STEPS DISTILL_THREADS VER_STEPS \
               VER_POOL VER_THREADS VER_ARGS BATCH BATCHES GROUP DDPO_STEPS DDIM_STEPS GRPO_GUIDANCE JPEG_ARGS \
               GRPO_ARGS ARM_MARGIN_S SD SD_LCM; do
             echo "${v,,}=${!v}"; done; echo "prebuilt_models=${GENRL_MODELS:-}")  # one name=value a line
timeout 60 "$PY" - "$RESULT" "$W" "$GEN" "${LCM:-}" "${VER:-}" "$DEVICE" "$GPU_NAME" "$MIN" "$BUDGET_S" "$SETTINGS" \
  $ARMS <<'EOF'
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from genrl_cpu import _provenance, goals, model_info, plot
from pixelrl.train.logger import read_rows
from pixelrl.utils.atomic import write_json_atomic

result, work, gen, lcm, ver, device, gpu, minutes, budget, settings, *arm_names = sys.argv[1:]
settings = dict(line.split("=", 1) for line in settings.splitlines())
work = Path(work)
cols = ("epoch", "images", "updates", "wall_s", "reward_mean", "reward_std", "heldout_reward", "success",
        "heldout_success", "kl_ref", "approx_kl", "pareto_frac", "grad_norm", "act_s", "env_s", "update_s")
arms, thr = {}, {}
for name in arm_names:
    run = work / name / "runs" / name
    rows = [{k: r[k] for k in cols if k in r} for r in read_rows(run, "train")] if run.is_dir() else []
    part = work / f"{name}.json"
    res = json.loads(part.read_text())["arms"].get(name, {}) if part.is_file() else {}
    arms[name] = {**res, "rows": rows}
    if not rows:
        thr[name] = {"epochs": 0, "error": f"no rows; see {name}.log in runs.tar.gz"}
        print(f"{name:15s} no epoch finished (see {name}.log in runs.tar.gz)", flush=True)
        continue
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    last, first = rows[-1], rows[0]
    t = {"epochs": len(rows), "images": last["images"], "updates": last["updates"], "train_wall_s": last["wall_s"],
         "images_per_epoch": first["images"], "samples_per_update": last["images"] / max(last["updates"], 1),
         "images_per_s": last["images"] / last["wall_s"],
         "sampling_images_per_s": last["images"] / sum(r["act_s"] for r in rows),
         "update_samples_per_s": last["images"] / max(sum(r["update_s"] for r in rows), 1e-9),
         "reward_s_share": sum(r["env_s"] for r in rows) / last["wall_s"],
         "device": (cfg.get("decisions") or {}).get("device"), "first_epoch_s": first["wall_s"]}
    if len(rows) > 1:  # without the first epoch's warm-up (CUDA kernels, allocator)
        t["images_per_s_after_first"] = (last["images"] - first["images"]) / (last["wall_s"] - first["wall_s"])
    thr[name] = t
    print(f"{name:15s} {t['epochs']:4d} epochs {t['images']:7d} images {t['updates']:5d} updates  "
          f"{t['images_per_s']:7.1f} images/s ({t.get('images_per_s_after_first', float('nan')):.1f} after the first "
          f"epoch; sampling {t['sampling_images_per_s']:.1f})  {t['samples_per_update']:.0f} samples/update  "
          f"device {t['device']}  reward {first['reward_mean']:.4f} -> {last['reward_mean']:.4f}", flush=True)
phases = {}
if (work / "phases.tsv").is_file():
    for line in (work / "phases.tsv").read_text().splitlines():
        n, s, rc = line.split("\t")
        phases[n] = {"wall_s": int(s), "exit": int(rc), "stopped_by_guard": rc in ("124", "137")}
sd = bool(settings["sd"])
models = {"generator": {"path": gen}, "lcm": {"path": lcm}} if sd else model_info(gen, lcm or None, ver)
for name, folder, meta, key in (("generator", gen, "pixelrl_generator.json", "train_device"),
                                ("lcm", lcm, "pixelrl_generator.json", "distill_device"),
                                ("verifier", ver, "detector.json", "device")):  # where each model was trained
    p = Path(folder or "") / meta
    if not sd and folder and p.is_file() and name in models:
        models[name]["trained_on_device"] = json.loads(p.read_text()).get(key)
complete = bool(arm_names) and all(a["rows"] for a in arms.values())
summary = {
    "benchmark": "genrl_gpu", **_provenance(), "gpu": gpu or None, "device": device, "reduced": True,
    "command": "bash benchmarks/gpu_genrl.sh" + (" --quick" if settings["quick"] == "1" else ""),
    "settings": settings,
    "complete": complete, "budget_s": int(budget), "arm_minutes": float(minutes),
    "note": f"REDUCED: {float(minutes):.2f} min per arm (the goals are stated for 15); the arms ran at the same time "
            f"on {gpu or device}, one CPU thread each; " + ("a Stable Diffusion-sized pipeline" if sd else
            f"models trained in the same call on {settings.get('model_device') or device} (phases, settings)")
            + "; images per epoch / samples per update: "
            + ", ".join(f"{n} {t['images_per_epoch']} / {t['samples_per_update']:.0f}"
                        for n, t in thr.items() if t["epochs"]),
    "models": models, "phases": phases, "throughput": thr, "goals": goals(arms), "arms": arms,
    "total_wall_s": sum(p["wall_s"] for p in phases.values())}
write_json_atomic(Path(result), summary)
if any(a["rows"] for a in arms.values()):
    plot(arms, Path(result).with_suffix(".png"))
print(json.dumps(summary["goals"], indent=1))
print(f"wrote {result} (complete: {complete})")
EOF
[[ $? == 0 ]] || say "ERROR: the summary failed"

# ---- (6) copy back (at most 8 files) --------------------------------------------------------------------------
(cd "$W" && find . -not -path '*/checkpoints/*' -not -path './preflight/*' \( -name train.csv -o -name config.json \
    -o -name '*.log' -o -name detector.json -o -name pixelrl_generator.json -o -name metrics.jsonl -o -name '*.txt' \
    -o -name phases.tsv -o -regex '\./[^/]*\.json' \) -print0 | tar czf "$OUT/runs.tar.gz" --null -T -)
say "done; files in $OUT:"
ls -la "$OUT"
[[ -f $RESULT ]] || { say "ERROR: no result JSON"; exit 1; }
