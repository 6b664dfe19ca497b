#!/usr/bin/env bash
# Installs everything pixelrl needs on a fresh Debian/Ubuntu machine, skipping what is already there:
#   1. Debian packages for headless MuJoCo rendering (EGL and OSMesa),
#   2. a virtual environment in .venv,
#   3. PyTorch (the CPU build torch==2.13.0 on machines without an NVIDIA GPU),
#   4. pixelrl itself, editable, with the extras named in PIXELRL_EXTRAS (default:
#      dmc,gym,atari,offline,rewards,metaworld,hub,wandb,genrl,ray,docs,dev; rewards is transformers, for the CLIP reward model; it
#      leaves the torch installed in step 3 as it is), and, when the extras name metaworld (or all), Meta-World itself
#      with --no-deps: it pins an older MuJoCo than pixelrl's.
# Re-running it is cheap: a stamp file records the hash of pyproject.toml and the extras installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${PIXELRL_EXTRAS:-dmc,gym,atari,offline,rewards,metaworld,hub,wandb,genrl,ray,docs,dev}
METAWORLD=metaworld==3.1.1  # the Meta-World v3 tasks on Gymnasium 1.x; works with mujoco 3.16 (tests/envs/test_metaworld.py)
APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libosmesa6"
# Debian's chromium and its driver: the labelling page's browser test (tests/web) drives them with Selenium (dev extra)
case ",$EXTRAS," in *,dev,*) APT_PACKAGES="$APT_PACKAGES chromium chromium-driver" ;; esac

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages (only those missing).
if command -v dpkg-query >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    log "installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

# 2. Virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

stamp="$VENV/.pixelrl-setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import pixelrl, torch" 2>/dev/null; then
  exit 0
fi

# 3. PyTorch: CPU build on machines without an NVIDIA GPU (the default PyPI wheel is a multi-GB CUDA build).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    log "NVIDIA GPU found: installing the CUDA build of torch"
    $PIP install -q "torch>=2.4,<2.15"
  else
    log "no GPU: installing the CPU build torch==2.13.0"
    $PIP install -q torch==2.13.0
  fi
fi

# 4. pixelrl with its extras.
log "installing pixelrl[$EXTRAS]"
$PIP install -q -e ".[$EXTRAS]"
case ",$EXTRAS," in *,metaworld,*|*,all,*)
  log "installing $METAWORLD (--no-deps: its dependencies came with pixelrl[metaworld])"
  $PIP install -q --no-deps "$METAWORLD" ;;
esac
echo "$want" > "$stamp"
log "done"
