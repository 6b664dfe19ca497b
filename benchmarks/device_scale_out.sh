#!/usr/bin/env bash
# Issue 18's scale-out on a 16-core machine in one call: env frames/s of one process against 1, 2, 4, 8 and 15 Ray env
# workers (benchmarks/scale_out.py) on ale/Pong, scaling efficiency throughput(N) / (N x throughput(1)) (goal: >= 80%
# at the largest N), with RLlib 2.60's EnvRunner sampling as the peer in the same run, under a wall-clock deadline so
# that whatever was measured comes back in $OUT before the call's limit.
#
# Prepare once, here (network needed; .whl-ray/ is git-ignored and travels as `carry`; 52 MiB + the working tree):
#     scripts/device_wheels.sh --profile scale-out
# Then, with the project's device tool, ONE call (check `status` first: budget_left_s must cover the machine's
# start, 1-2 min, plus timeout_s; a machine starts only with 4+ minutes left):
#     run(command="bash benchmarks/device_scale_out.sh", carry=[".whl-ray"], timeout_s=500)
# The script ends by itself after SCALE_OUT_BUDGET_S = 450 s (it shortens --seconds to fit when its estimate of the
# arms' start-up costs says the default would not). With less device time left, shorten both, e.g.:
#     run(command="SCALE_OUT_BUDGET_S=300 bash benchmarks/device_scale_out.sh", carry=[".whl-ray"], timeout_s=350)
# (the start of the machine, 1-2 minutes, comes on top: the default call takes ~10 of a session's 15 minutes)
# A broken machine (a missing package, Ray that does not start) fails the preflight within ~1 minute.
# Then commit what came back: $OUT/scale_out_<N>cpu.json -> benchmarks/results/ and the numbers into
# docs/distributed.md ("Measuring on a 16-core machine").
#
# Only ale/ is measured: the DMC wheels (mujoco + dm_control, 29 MiB of .whl/) do not fit beside ray's 52 MiB in the
# 64 MiB a call carries. The GPU is not used (env stepping and random actions; RLlib's EnvRunners act with PPO's
# default CNN on the CPU).
#
# Why 15 workers and not 16: the driver (the learner process of a real run, here the loop that receives every chunk
# and unpickles it) needs a core of its own, and Ray's raylet / GCS some more; 16 workers on 16 cores would measure
# the driver competing with the workers, not how the workers scale. RLlib gets the same count (its local EnvRunner
# and learner live in the driver).
#
# What it does: (1) installs the wheels of .whl-ray into /tmp/site and of .whl-ray/rllib into /tmp/rllib_site (RLlib's
# requirements, gymnasium 1.2.2 among them, seen only by the RLlib peer through scale_out.py --rllib-path; skipped when
# the same wheels are there already) and puts /tmp/site and src/ on PYTHONPATH (pixelrl runs from the checkout, no
# install; torch is the image's, never installed here), (2) prints versions and runs a preflight: imports (ray,
# ale_py, gymnasium, tyro, pixelrl), an ale/Pong step through pixelrl.envs.make, ray.init(include_dashboard=False,
# num_cpus=<cores>) with one remote call that imports ale_py in a worker, and RLlib's PPOConfig imported with the
# peer's path, (3) runs scale_out.py under `timeout` with the time left, (4) adds to the result JSON what the
# project's results carry (CPU flags, load average before and after, the command, cores, GPU) and a summary
# (efficiency at the largest N, ours / RLlib per N); if the guard stopped the benchmark before it wrote its JSON,
# a partial result is written from the lines it printed ("partial": true), (5) copies back: log.txt, the result
# JSON, summary.md.
#
# Settings (environment variables; defaults are the full configuration):
#   SCALE_OUT_BUDGET_S   wall seconds for the whole script (default 450)
#   SCALE_OUT_ENVS       default ale/Pong;  SCALE_OUT_WORKERS  default 1,2,4,8,15
#   SCALE_OUT_SECONDS    seconds per arm (default 15; lowered to fit the budget, never below 3)
#   SCALE_OUT_ENVS_PER_WORKER (4), SCALE_OUT_CHUNK_STEPS (32): as the 2-core result, so the two compare
#   SCALE_OUT_RLLIB      1 (default) / 0: the RLlib peer
#   SCALE_OUT_WHEELS     the wheels folder (default .whl-ray);  SCALE_OUT_SITE (/tmp/site), SCALE_OUT_RLLIB_SITE
#                        (/tmp/rllib_site): where they go;  SCALE_OUT_SETUP=0 skips the install (an environment that
#                        has everything already)
#   SCALE_OUT_NOTE       how the machine was shared (the result's "shared"; default: alone on the machine)
#   PYTHON               interpreter (default python3);  OUT  where results go (the device tool sets it)
# A dry run on a CPU, from the repository root (wheels for this machine's Python built with
# DEVICE_PY=3.11 DEVICE_WHEELS_DIR=/tmp/whl311 scripts/device_wheels.sh --profile scale-out):
#   OUT=/tmp/out PYTHON=.venv/bin/python SCALE_OUT_WHEELS=/tmp/whl311 SCALE_OUT_SITE=/tmp/site311 \
#     SCALE_OUT_RLLIB_SITE=/tmp/rllib311 SCALE_OUT_WORKERS=1,2 SCALE_OUT_SECONDS=5 SCALE_OUT_BUDGET_S=300 \
#     SCALE_OUT_NOTE="dry run on the shared 2-core machine" bash benchmarks/device_scale_out.sh
set -uo pipefail
T_START=$(date +%s)
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/device_scale_out_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

PY=${PYTHON:-python3}
BUDGET_S=${SCALE_OUT_BUDGET_S:-450}
ENVS=${SCALE_OUT_ENVS:-ale/Pong}
WORKERS=${SCALE_OUT_WORKERS:-1,2,4,8,15}
SECS=${SCALE_OUT_SECONDS:-15}
K=${SCALE_OUT_ENVS_PER_WORKER:-4}
CHUNK=${SCALE_OUT_CHUNK_STEPS:-32}
RLLIB=${SCALE_OUT_RLLIB:-1}
WHL=${SCALE_OUT_WHEELS:-.whl-ray}
SITE=${SCALE_OUT_SITE:-/tmp/site}
RLLIB_SITE=${SCALE_OUT_RLLIB_SITE:-/tmp/rllib_site}
SETUP=${SCALE_OUT_SETUP:-1}
NOTE=${SCALE_OUT_NOTE:-alone on the machine ($(nproc) cores; the device tool runs one command at a time)}
SUMMARY_S=20  # kept for the summary and copies
CORES=$(nproc)
RESULT=$OUT/scale_out_${CORES}cpu.json
WORK=$(mktemp -d /tmp/device_scale_out.XXXXXX)
elapsed() { echo $(($(date +%s) - T_START)); }
say() { echo "[device_scale_out $(elapsed)s] $*"; }
[[ $WORKERS =~ ^[0-9]+(,[0-9]+)*$ ]] || { say "ERROR: SCALE_OUT_WORKERS must be comma-separated counts, not '$WORKERS'"; exit 2; }
[[ $SECS =~ ^[0-9]+([.][0-9]+)?$ ]] || { say "ERROR: SCALE_OUT_SECONDS must be a number, not '$SECS'"; exit 2; }

say "envs $ENVS workers $WORKERS envs/worker $K chunk $CHUNK seconds/arm $SECS rllib $RLLIB budget ${BUDGET_S}s" \
    "cores $CORES out $OUT"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- (1) wheels ------------------------------------------------------------------------------------------------
source benchmarks/_wheels.sh
install() {  # install FOLDER TARGET: here the wheels are required
  install_wheels "$1" "$2" || { say "ERROR: no $1/*.whl (run scripts/device_wheels.sh --profile scale-out here" \
                                    "and carry .whl-ray)"; exit 1; }
}
if [[ $SETUP == 1 ]]; then
  install "$WHL" "$SITE"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  if [[ $RLLIB == 1 ]]; then install "$WHL/rllib" "$RLLIB_SITE"; fi
fi
RLLIB_ARGS=(--no-rllib)
if [[ $RLLIB == 1 ]]; then
  RLLIB_ARGS=()
  [[ -d $RLLIB_SITE ]] && RLLIB_ARGS=(--rllib-path "$RLLIB_SITE")
fi
# Ray's workers inherit this environment (PYTHONPATH included); no usage-stats call home (there is no network)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RAY_USAGE_STATS_ENABLED=0

# ---- (2) versions and preflight --------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
GPU=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "cpus: $CORES usable of $(nproc --all), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $LOAD_START"
timeout 150 "$PY" - "$CORES" <<'EOF' || { say "ERROR: preflight failed (see above); nothing was measured"; exit 1; }
import os, platform, sys, time
t0 = time.time()
import numpy, torch, gymnasium, tyro, ale_py, ray
import pixelrl
from pixelrl.envs import make
print(f"python {platform.python_version()} torch {torch.__version__} numpy {numpy.__version__} ray {ray.__version__} "
      f"({os.path.dirname(ray.__file__)}) ale_py {ale_py.__version__} gymnasium {gymnasium.__version__} "
      f"tyro {tyro.__version__}")
env = make("ale/Pong", seed=0)
obs, _ = env.reset(seed=0)
obs, *_ = env.step(env.action_space.sample())
print(f"env ok: ale/Pong obs {obs.shape} {obs.dtype}")
env.close()
ray.init(include_dashboard=False, log_to_driver=False, num_cpus=int(sys.argv[1]))

@ray.remote
def probe():
    import ale_py, pixelrl  # the workers see /tmp/site and src/ through the inherited PYTHONPATH
    return os.getpid(), ale_py.__version__

print(f"ray ok: {ray.cluster_resources().get('CPU')} CPUs, a worker (pid, ale_py) = {ray.get(probe.remote())}, "
      f"preflight {time.time() - t0:.1f}s")
ray.shutdown()
EOF
if [[ $RLLIB == 1 ]]; then
  if PYTHONPATH=${RLLIB_ARGS[1]:-}${RLLIB_ARGS[1]:+:}$PYTHONPATH timeout 120 "$PY" -c "
import gymnasium, ray
from ray.rllib.algorithms.ppo import PPOConfig
print(f'rllib ok: ray {ray.__version__} gymnasium {gymnasium.__version__} ({gymnasium.__file__})')"; then :
  else
    say "WARNING: RLlib does not import with its path; its arms will say 'skipped' in the result"
  fi
fi
say "preflight done"

# ---- (3) the benchmark under the deadline ----------------------------------------------------------------------
LEFT_S=$((BUDGET_S - $(elapsed) - SUMMARY_S))
# start-up cost estimates (not measured on the device yet; generous): ray init + the call-overhead probe 15 s, per
# env the single arm 5 s, a Ray arm 5 s + 0.3 s per worker, an RLlib arm (a new Ray, PPO built, runners importing
# torch) 30 s + 1 s per runner
SECS=$("$PY" - "$LEFT_S" "$SECS" "$WORKERS" "$ENVS" "$RLLIB" <<'EOF'
import sys
left, secs, counts, envs, rllib = float(sys.argv[1]), float(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")], \
    len(sys.argv[4].split(",")), sys.argv[5] == "1"
fixed = 15 + envs * (5 + sum(5 + 0.3 * n for n in counts) + (sum(30 + n for n in counts) if rllib else 0))
arms = envs * (1 + len(counts) * (2 if rllib else 1))
fit = (left - fixed) / arms
print(f"{min(secs, fit):.1f}" if fit >= 3 else "0")
EOF
)
if [[ $SECS == 0 ]]; then
  say "ERROR: ${LEFT_S}s left after set-up do not fit the arms at 3 s each (raise SCALE_OUT_BUDGET_S or drop counts)"
  exit 1
fi
ARGS=(benchmarks/scale_out.py --envs "$ENVS" --workers "$WORKERS" --envs-per-worker "$K" --chunk-steps "$CHUNK"
      --seconds "$SECS" "${RLLIB_ARGS[@]}" --out "$RESULT"
      --shared-note "$NOTE")
say "measuring for at most ${LEFT_S}s ($SECS s per arm): $PY ${ARGS[*]}"
timeout -k 5 "$LEFT_S" "$PY" "${ARGS[@]}" 2>&1 | tee "$WORK/stdout.txt"
rc=${PIPESTATUS[0]}
((rc == 0)) || say "benchmark exited with $rc ($([[ $rc == 124 || $rc == 137 ]] && echo "stopped by the guard" || echo error))"

# ---- (4) provenance, partial result, summary -------------------------------------------------------------------
timeout 60 "$PY" - "$RESULT" "$WORK/stdout.txt" "$rc" "$LOAD_START" "$GPU" "$PY ${ARGS[*]}" "$WORKERS" "$K" "$CHUNK" "$SECS" <<'EOF' \
  | tee "$OUT/summary.md"
import ast, json, os, re, sys
from pathlib import Path
result_path, stdout, rc, load_start, gpu, command, counts, k, chunk, secs = sys.argv[1:11]
counts = [int(x) for x in counts.split(",")]
path = Path(result_path)
lines = Path(stdout).read_text().splitlines() if Path(stdout).exists() else []
partial = not path.exists()
if partial:  # the guard stopped scale_out.py before it wrote: rebuild what its lines say
    res, env = {"settings": {"envs_per_worker": int(k), "chunk_steps": int(chunk), "seconds": float(secs),
                             "workers": counts}, "envs": {}}, None
    for ln in lines:
        if m := re.match(r"== (\S+)", ln):
            env = m.group(1)
            res["envs"][env] = {}
        elif env and (m := re.match(r"\s+single process \((\d+) envs\): ([\d.]+) frames/s", ln)):
            res["envs"][env]["single"] = {"frames_per_s": float(m.group(2))}
        elif env and (m := re.match(r"\s+(ray|ray_policy) (\d+) workers: ([\d.]+) frames/s", ln)):
            res["envs"][env].setdefault(m.group(1), {})[m.group(2)] = {"frames_per_s": float(m.group(3))}
        elif m := re.match(r"\s+(\S+) rllib (\d+) env runners: (\{.*\})", ln):
            res["envs"].setdefault(m.group(1), {}).setdefault("rllib", {})[m.group(2)] = ast.literal_eval(
                m.group(3))  # printed as a Python dict
    for r in res["envs"].values():
        if r.get("ray"):
            n0 = min(r["ray"], key=int)
            base = r["ray"][n0]["frames_per_s"] / int(n0)
            r["ray_efficiency"] = {n: v["frames_per_s"] / (int(n) * base) for n, v in r["ray"].items()}
    res["note"] = ("PARTIAL: benchmarks/scale_out.py was stopped by the script's deadline before it wrote its result; "
                   "rebuilt from the lines it printed (frames/s only)")
else:
    res = json.loads(path.read_text())
try:
    flags = sorted(set(re.findall(r"avx512_bf16|amx_bf16|avx512f|avx2", Path("/proc/cpuinfo").read_text())))
except OSError:
    flags = []
res.update({"partial": partial, "exit_code": int(rc), "cpu_flags": flags, "cores": os.cpu_count(), "gpu": gpu or None,
            "load_average_start": [float(x) for x in load_start.split()], "load_average_end": list(os.getloadavg()),
            "command": command, "script": "benchmarks/device_scale_out.sh"})
if "machine" not in res:
    import platform
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.machine())
    res["machine"] = f"{cpu}, {os.cpu_count()} cpus"
summary = {}
print(f"# scale-out, {res['machine']}{' (PARTIAL)' if partial else ''}\n")
print("| env | arm | " + " | ".join(f"{n}" for n in counts) + " |")
print("|---|---|" + "---|" * len(counts))
for env, r in res["envs"].items():
    def row(name, d, fmt=lambda v: f"{v['frames_per_s']:,.0f}" if "frames_per_s" in v else "skipped"):
        print(f"| {env} | {name} | " + " | ".join(fmt(d[str(n)]) if str(n) in d else "--" for n in counts) + " |")
    if "single" in r:
        print(f"| {env} | one process ({res['settings'].get('envs_per_worker', '?')} envs) | "
              f"{r['single']['frames_per_s']:,.0f} |" + " |" * (len(counts) - 1))
    if r.get("ray"):
        row("Ray workers, random actions (frames/s)", r["ray"])
        row("scaling efficiency", r["ray_efficiency"], fmt=lambda v: f"{100 * v:.0f}%")
    if isinstance(r.get("rllib"), dict) and all(isinstance(v, dict) for v in r["rllib"].values()):
        row("RLlib EnvRunners, PPO's CNN acting (frames/s)", r["rllib"])
    s = {}
    if r.get("ray_efficiency"):
        n = max(r["ray_efficiency"], key=int)
        s = {"largest_n": int(n), "efficiency_at_largest_n": r["ray_efficiency"][n],
             "goal_80_percent_met": r["ray_efficiency"][n] >= 0.8}
    ratio = {n: r["ray"][n]["frames_per_s"] / v["frames_per_s"] for n, v in (r.get("rllib") or {}).items()
             if isinstance(v, dict) and v.get("frames_per_s") and n in (r.get("ray") or {})}
    if ratio:
        s["ours_over_rllib"] = ratio
    summary[env] = s
res["summary"] = summary
print("\n" + json.dumps(summary, indent=1))
tmp = path.with_suffix(".tmp")
tmp.write_text(json.dumps(res, indent=1))
tmp.replace(path)
EOF
say "done; files in $OUT:"
ls -la "$OUT"
rm -rf "$WORK"
[[ -f $RESULT ]] || { say "ERROR: no result JSON"; exit 1; }
# 3: a result, but partial (the guard stopped the benchmark); not 124, which the device tool reads as its own timeout
((rc == 0)) || { say "the result is PARTIAL (benchmark exit $rc)"; exit 3; }
