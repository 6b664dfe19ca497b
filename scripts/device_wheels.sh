#!/usr/bin/env bash
# Prepare what a bare GPU machine needs to train pixelrl on DMC, for a machine with no network:
#
#   .whl/  wheels (Python 3.12, manylinux x86_64) of the packages `import pixelrl` + DMC training need that
#          the machine's image lacks; installed there with
#          pip install --no-index --no-deps --target /tmp/site .whl/*.whl   (see benchmarks/gpu_dmc100k.sh)
#   .gl/   the EGL / OpenGL loader libraries as .deb files (unpacked there with dpkg -x; MuJoCo renders with EGL)
#
# Both folders are ignored by git (this script adds them to .git/info/exclude) and travel to the machine as
# `carry` paths. Run from anywhere; it works in the repository root. Needs network here (pip, apt-get).
#
#   scripts/device_wheels.sh            # download what is missing, then check sizes and wheel dependencies
#   scripts/device_wheels.sh --check    # only the checks
#
# Profile scale-out (`--profile scale-out`, combinable with --check) prepares instead, in its own ignored folder
# `.whl-ray/` (the DMC profile's .whl/ and .gl/ are untouched), what benchmarks/device_scale_out.sh needs to measure
# benchmarks/scale_out.py on `ale/` with RLlib's EnvRunners as the peer:
#   .whl-ray/*.whl        installed into /tmp/site: ray 2.60.0 (the version RLlib was measured with here; pyproject's
#                         [ray] extra asks only >=2.40) without its Java jar ray/jars/ray_dist.jar (31 of its 76 MiB;
#                         only Java workers read it) and the dashboard's web client ray/dashboard/client/ (the
#                         dashboard is off: include_dashboard=False), RECORD rewritten; ray's requirements the image
#                         lacks (jsonschema, jsonschema-specifications, referencing, rpds-py); ale-py (ROMs included);
#                         gymnasium 1.4.0 and pixelrl's CLI requirements (tyro, typeguard, docstring-parser,
#                         typing-extensions)
#   .whl-ray/rllib/*.whl  installed into /tmp/rllib_site, put first on the PYTHONPATH of the RLlib peer only
#                         (scale_out.py --rllib-path): ray[rllib]'s requirements the image lacks, gymnasium 1.2.2 (RLlib
#                         2.60 pins it; pixelrl's own arms keep 1.4.0), dm-tree, lz4, ormsgpack, tensorboardX,
#                         pydantic (+ pydantic-core, annotated-types, typing-inspection)
# DMC (mujoco + dm_control, the 29 MiB of .whl) does not fit beside it in one call's 64 MiB, so a scale-out call
# measures ale/ only. For a test on another Python (here: 3.11), DEVICE_PY=3.11 DEVICE_WHEELS_DIR=/tmp/x picks that
# Python's wheels and writes them elsewhere (the size check is then only indicative).
#
# What the image already has (numpy, torch, scipy, lxml, absl-py, etils, protobuf, requests, tqdm, pyparsing,
# rich, safetensors, matplotlib, imageio, tensorboard, h5py, opencv-python-headless, cloudpickle, ...) is not
# downloaded: versions there are recent enough for pixelrl's ranges. The list below was found by running a short
# `pixelrl train` (drm, paper preset, async env workers) and listing the third-party modules it imported, then
# adding their pip requirements that the image lacks. Not included (not imported by DMC training): imageio-ffmpeg
# (videos only; run with --no-video), websockets (mujoco's remote viewer), minari (offline datasets),
# ale-py, gymnasium[mujoco] extras.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

PROFILE=dmc CHECK_ONLY=0
while (($#)); do
  case "$1" in
    --check) CHECK_ONLY=1 ;;
    --profile) PROFILE=${2:?--profile needs dmc or scale-out}; shift ;;
    --profile=*) PROFILE=${1#--profile=} ;;
    *) echo "ERROR: unknown argument $1 (use --profile dmc|scale-out, --check)" >&2; exit 2 ;;
  esac
  shift
done
[[ $PROFILE == dmc || $PROFILE == scale-out ]] || { echo "ERROR: --profile is dmc or scale-out, not $PROFILE" >&2; exit 2; }
PYV=${DEVICE_PY:-3.12}

WHEELS=(
  mujoco==3.16.0          # pixelrl[dmc]
  dm_control==1.0.49      # pixelrl[dmc]
  dm-env==1.6             # dm_control
  dm-tree==0.1.10         # dm_control, dm-env
  labmaze==1.0.6          # dm_control (imported by its locomotion suites only; small, kept so pip's view is whole)
  PyOpenGL==3.1.10        # dm_control, mujoco (MUJOCO_GL=egl goes through OpenGL.EGL)
  glfw==2.11.0            # dm_control, mujoco (import-time dependency of mujoco's GL contexts)
  gymnasium==1.4.0        # pixelrl
  Farama-Notifications==0.0.6  # gymnasium
  tyro==1.0.17            # pixelrl (CLI)
  typeguard==4.6.1        # tyro
  docstring_parser==0.18.0     # tyro
  typing_extensions==4.16.0    # tyro / typeguard want a recent one; pure Python, shadows the image's older one
  diffusers==0.42.1       # pixelrl[genrl] (benchmarks/gpu_genrl.sh); peft, transformers, accelerate, huggingface-hub,
                          # tokenizers and regex, the rest of what genrl imports, are the image's
)
# profile scale-out: the packages of benchmarks/device_scale_out.sh (see the header); site = /tmp/site there,
# rllib = /tmp/rllib_site (the RLlib peer's --rllib-path only)
RAY_WHEELS=(
  ray==2.60.0             # pixelrl[ray]; jar and dashboard web client left out (below)
  jsonschema==4.26.0      # ray
  jsonschema-specifications==2025.9.1  # jsonschema
  referencing==0.37.0     # jsonschema
  rpds-py==2026.9.1       # jsonschema, referencing
  ale-py==0.12.1          # pixelrl[atari] (ROMs inside)
  gymnasium==1.4.0        # pixelrl
  Farama-Notifications==0.0.6  # gymnasium
  tyro==1.0.17            # pixelrl (CLI; imported by pixelrl.train.setup)
  typeguard==4.6.1        # tyro
  docstring_parser==0.18.0     # tyro
  typing_extensions==4.16.0    # tyro / pydantic want a recent one; shadows the image's
)
RLLIB_WHEELS=(
  gymnasium==1.2.2        # ray[rllib] 2.60 pins it; only on the peer's path
  dm-tree==0.1.10         # ray[rllib]
  lz4==4.4.5              # ray[rllib]
  ormsgpack==1.13.1       # ray[rllib]
  tensorboardX==2.6.5     # ray[rllib] / ray[tune]
  pydantic==2.14.4        # ray[rllib] / ray[tune]
  pydantic-core==2.50.5   # pydantic
  annotated-types==0.8.0  # pydantic
  typing-inspection==0.4.5     # pydantic
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
GL_DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
LIMIT=$((64 * 1024 * 1024))

for p in /.whl/ /.gl/ /.whl-ray/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude
done

CACHE=${PIXELRL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pixelrl-device-wheels}
if [[ $PROFILE == dmc ]]; then
  WHL=${DEVICE_WHEELS_DIR:-.whl}
  GROUPS_=("$WHL" "${WHEELS[@]}")
else
  WHL=${DEVICE_WHEELS_DIR:-.whl-ray}
  GROUPS_=("$WHL" "${RAY_WHEELS[@]}" "--" "$WHL/rllib" "${RLLIB_WHEELS[@]}")
fi

# Copy wheels from the cache into their folder, leaving out what the runs never read, so that everything fits the
# 64 MiB the device tool carries. DMC (the full wheels are 94 MiB): mujoco's experimental studio / imgui viewers (not
# imported by `import mujoco`), dm_control's locomotion / soccer / fruit-fly meshes and textures (its .py files
# stay, so every module still imports; the suite's dog assets stay too), test data and *_test.py files. Ray (76
# MiB): the Java jar (Java workers only) and the dashboard's web client (the dashboard is never started). A wheel
# keeps its name and version; RECORD lists only what is left. Only wheels for Python $PYV are taken from the cache.
slim() {  # slim DEST SPEC...
  python3 - "$CACHE" "$PYV" "$@" <<'PY'
import re, sys, zipfile, pathlib
cache, pyv, dest, specs = pathlib.Path(sys.argv[1]), sys.argv[2].replace(".", ""), pathlib.Path(sys.argv[3]), sys.argv[4:]
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
DROP = [r"^mujoco/experimental/", r"^dm_control/locomotion/.*(?<!\.py)$", r"^dm_control/mujoco/testing/",
        r"^dm_control/blender/", r"^dm_control/mjcf/test_assets/", r"^dm_control/third_party/kinova/.*(?<!\.py)$",
        r"_test\.py$", r"^ray/jars/", r"^ray/dashboard/client/"]
def for_python(w):  # name-version-pytag-abitag-platform.whl
    py, abi = w.name.split("-")[-3:-1]
    tags = py.split(".")
    return (f"cp{pyv}" in tags or any(t in ("py3", "py2") for t in tags)
            or (abi == "abi3" and any(t.startswith("cp3") and int(t[2:]) <= int(pyv) for t in tags)))
dest.mkdir(parents=True, exist_ok=True)
for spec in specs:
    name, ver = spec.split("==")
    found = [w for w in cache.glob("*.whl")
             if norm(w.name.split("-")[0]) == norm(name) and w.name.split("-")[1] == ver and for_python(w)]
    if len(found) != 1:
        sys.exit(f"ERROR: expected one wheel for {spec} (Python {pyv}) in {cache}, found {[w.name for w in found]}")
    src = found[0]
    dst = dest / src.name
    with zipfile.ZipFile(src) as zi:
        dropped = {i.filename for i in zi.infolist() if any(re.search(p, i.filename) for p in DROP)}
        if not dropped:  # nothing to leave out: the wheel as downloaded
            dst.write_bytes(src.read_bytes())
            continue
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zo:
            for i in zi.infolist():
                if i.filename in dropped:
                    continue
                data = zi.read(i)
                if i.filename.endswith(".dist-info/RECORD"):
                    data = "".join(l for l in data.decode().splitlines(True)
                                   if l.split(",")[0] not in dropped).encode()
                zo.writestr(i, data)
    print(f"{src.name}: {src.stat().st_size / 2**20:.1f} MiB -> {dst.stat().st_size / 2**20:.1f} MiB "
          f"({len(dropped)} files left out)")
PY
}

# call FN DIR SPEC... [-- DIR SPEC...] for each group of GROUPS_
each_group() {
  local fn=$1 dir= specs=() x
  for x in "${GROUPS_[@]}" --; do
    if [[ $x == -- ]]; then "$fn" "$dir" "${specs[@]}"; dir= specs=()
    elif [[ -z $dir ]]; then dir=$x
    else specs+=("$x"); fi
  done
}
download() {  # download DIR SPEC...: pip reuses what the cache already holds ("File was already downloaded")
  shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    "${PLATFORMS[@]}" -d "$CACHE" "$@" 2>&1 | grep -v "^WARNING: Location" || true
}
refill() { mkdir -p "$1"; rm -f "$1"/*.whl; slim "$@"; }

if ((!CHECK_ONLY)); then
  mkdir -p "$CACHE"
  each_group download  # one pip call per group: the rllib group's gymnasium differs from the site group's
  each_group refill
  if [[ $PROFILE == dmc ]] && ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    apt-get "${o[@]}" -qq update
    (cd .gl && apt-get "${o[@]}" -qq download "${GL_DEBS[@]}" 2>&1 | grep -v unsandboxed || true)
  fi
fi

list_and_dups() {  # one version of each distribution per folder (two stop the whole install there)
  local dir=$1 dups
  echo "== wheels in $dir"
  ls -1 "$dir"/*.whl | sed 's|.*/||'
  dups=$(ls "$dir"/*.whl | sed -E 's|.*/||; s/-[0-9][^-]*-.*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
  [[ -z "$dups" ]] || { echo "ERROR: several versions in $dir of: $dups" >&2; exit 1; }
}
each_group list_and_dups

echo "== requirements of the wheels that are neither in $WHL nor in the machine's image"
python3 - "$PROFILE" "$WHL" <<'EOF'
import re, sys, zipfile, pathlib
profile, whl = sys.argv[1], pathlib.Path(sys.argv[2])
# the machine's image (KINDS.md of the device tool, 'Python packages already there'), the names pixelrl relies on
image = set("""absl-py attrs certifi charset-normalizer cloudpickle contourpy cycler etils filelock fonttools fsspec
h5py idna imageio jinja2 kiwisolver lxml markdown markupsafe matplotlib ml-dtypes mpmath networkx numpy
opencv-python-headless packaging pillow pip protobuf psutil pygments pyparsing python-dateutil pyyaml requests rich
safetensors scipy setuptools six sympy tensorboard tensorboard-data-server torch tqdm triton typing-extensions
urllib3 werkzeug wheel wrapt zipp markdown-it-py mdurl huggingface-hub regex""".split())
if profile == "scale-out":  # ray's and ray[rllib]'s requirements that the image holds (KINDS.md)
    image |= set("click msgpack pandas pyarrow aiohttp aiosignal frozenlist grpcio".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def read(folder):
    have = {}
    for w in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(w) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            text = z.read(meta).decode()
        name = norm(re.search(r"^Name: (.+)$", text, re.M).group(1).strip())
        have[name] = [l[len("Requires-Dist: "):] for l in text.splitlines() if l.startswith("Requires-Dist: ")]
    return have
# optional or unused at run time (checked: never imported by `pixelrl train` on DMC with MUJOCO_GL=egl)
unused = {"websockets", "importlib-metadata"}  # (diffusers imports the latter only on Python < 3.8)
def check(have, visible, extras=()):
    missing = set()
    for name, reqs in have.items():
        for r in reqs:
            m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", r)
            if (m and m.group(1) not in extras) or 'python_version < "3.1' in r.replace("'", '"'):
                continue
            dep = norm(re.match(r"[A-Za-z0-9_.\-]+", r).group(0))
            if dep not in visible and dep not in image and dep not in unused:
                missing.add(f"{dep} (needed by {name})")
    return missing
site = read(whl)
missing = check(site, site)
if profile == "scale-out":  # the peer sees rllib/ first, then the site: ray's rllib extra must be whole there
    rl = read(whl / "rllib")
    missing |= {f"{m} [RLlib peer]" for m in check({**site, **rl}, {**site, **rl}, extras=("rllib",))}
print("\n".join(sorted(missing)) or "none")
sys.exit(1 if missing else 0)
EOF

echo "== sizes (limit for what travels: 64 MiB = $LIMIT bytes)"
whl=$(find "$WHL" -name '*.whl' -print0 | du -cb --files0-from=- | tail -1 | cut -f1)
gl=0
[[ $PROFILE == dmc ]] && gl=$(du -cb .gl/*.deb | tail -1 | cut -f1)
# what else travels: tracked files + untracked files git does not ignore
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | sort -zu \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s+=$1} END {print s+0}')
total=$((whl + gl + tree))
mib() { echo "$1/1048576" | bc -l; }
printf '%-34s %10d bytes (%5.1f MiB)\n' "$WHL (all wheels under it)" "$whl" "$(mib "$whl")"
[[ $PROFILE == dmc ]] && printf '%-34s %10d bytes (%5.1f MiB)\n' ".gl" "$gl" "$(mib "$gl")"
printf '%-34s %10d bytes (%5.1f MiB)\n' "working tree (tracked + untracked)" "$tree" "$(mib "$tree")" \
  "total" "$total" "$(mib "$total")"
if ((total > LIMIT)); then
  echo "ERROR: over the 64 MiB the device tool carries by $(( (total - LIMIT) / 1024 )) KiB: leave out more" \
       "(or move untracked files out of the working tree)" >&2
  exit 1
fi
echo "ok: fits, $(( (LIMIT - total) / 1048576 )) MiB to spare"
if [[ $PROFILE == scale-out ]] && compgen -G ".whl/*.whl" >/dev/null; then
  dmc=$(du -cb .whl/*.whl | tail -1 | cut -f1)
  ((total + dmc > LIMIT)) && echo "note: the DMC wheels of .whl ($(( dmc / 1048576 )) MiB) do not fit beside" \
                                  "these: a scale-out call measures ale/ only"
fi
true
