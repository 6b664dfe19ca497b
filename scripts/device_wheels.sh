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
# What the image already has (numpy, torch, scipy, lxml, absl-py, etils, protobuf, requests, tqdm, pyparsing,
# rich, safetensors, matplotlib, imageio, tensorboard, h5py, opencv-python-headless, cloudpickle, ...) is not
# downloaded: versions there are recent enough for pixelrl's ranges. The list below was found by running a short
# `pixelrl train` (drm, paper preset, async env workers) and listing the third-party modules it imported, then
# adding their pip requirements that the image lacks. Not included (not imported by DMC training): imageio-ffmpeg
# (videos only; run with --no-video), websockets (mujoco's remote viewer), minari (offline datasets),
# ale-py, gymnasium[mujoco] extras.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

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
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
GL_DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
LIMIT=$((64 * 1024 * 1024))

for p in /.whl/ /.gl/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >>.git/info/exclude
done

CACHE=${PIXELRL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pixelrl-device-wheels}
if [[ "${1:-}" != "--check" ]]; then
  mkdir -p .whl .gl "$CACHE"
  # pip reuses what the cache already holds ("File was already downloaded")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$CACHE" "${WHEELS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  # Copy the wheels into .whl, leaving out of mujoco and dm_control what DMC training never reads, so that
  # everything fits the 64 MiB the device tool carries (the full wheels are 94 MiB): mujoco's experimental
  # studio / imgui viewers (not imported by `import mujoco`), dm_control's locomotion / soccer / fruit-fly meshes
  # and textures (its .py files stay, so every module still imports; the suite's dog assets stay too),
  # test data and *_test.py files. The wheel keeps its name and version; RECORD lists only what is left.
  rm -f .whl/*.whl
  python3 - "$CACHE" "${WHEELS[@]}" <<'PY'
import re, sys, zipfile, pathlib
cache, specs = pathlib.Path(sys.argv[1]), sys.argv[2:]
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
DROP = [r"^mujoco/experimental/", r"^dm_control/locomotion/.*(?<!\.py)$", r"^dm_control/mujoco/testing/",
        r"^dm_control/blender/", r"^dm_control/mjcf/test_assets/", r"^dm_control/third_party/kinova/.*(?<!\.py)$",
        r"_test\.py$"]
for spec in specs:
    name, ver = spec.split("==")
    found = [w for w in cache.glob("*.whl")
             if norm(w.name.split("-")[0]) == norm(name) and w.name.split("-")[1] == ver]
    if len(found) != 1:
        sys.exit(f"ERROR: expected one wheel for {spec} in {cache}, found {[w.name for w in found]}")
    src = found[0]
    dst = pathlib.Path(".whl") / src.name
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zo:
        dropped = {i.filename for i in zi.infolist() if any(re.search(p, i.filename) for p in DROP)}
        for i in zi.infolist():
            if i.filename in dropped:
                continue
            data = zi.read(i)
            if i.filename.endswith(".dist-info/RECORD"):
                data = "".join(l for l in data.decode().splitlines(True)
                               if l.split(",")[0] not in dropped).encode()
            zo.writestr(i, data)
    if dropped:
        print(f"{src.name}: {src.stat().st_size / 2**20:.1f} MiB -> {dst.stat().st_size / 2**20:.1f} MiB "
              f"({len(dropped)} files left out)")
PY
  if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/amd64/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    apt-get "${o[@]}" -qq update
    (cd .gl && apt-get "${o[@]}" -qq download "${GL_DEBS[@]}" 2>&1 | grep -v unsandboxed || true)
  fi
fi

echo "== wheels in .whl"
ls -1 .whl
# one version of each distribution (two stop the whole install there)
dups=$(ls .whl | sed -E 's/-[0-9][^-]*-.*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[[ -z "$dups" ]] || { echo "ERROR: several versions of: $dups" >&2; exit 1; }

echo "== requirements of the wheels that are neither in .whl nor in the machine's image"
python3 - <<'EOF'
import re, sys, zipfile, pathlib
# the machine's image (KINDS.md of the device tool, 'Python packages already there'), the names pixelrl relies on
image = set("""absl-py attrs certifi charset-normalizer cloudpickle contourpy cycler etils filelock fonttools fsspec
h5py idna imageio jinja2 kiwisolver lxml markdown markupsafe matplotlib ml-dtypes mpmath networkx numpy
opencv-python-headless packaging pillow pip protobuf psutil pygments pyparsing python-dateutil pyyaml requests rich
safetensors scipy setuptools six sympy tensorboard tensorboard-data-server torch tqdm triton typing-extensions
urllib3 werkzeug wheel wrapt zipp markdown-it-py mdurl""".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {}
for w in sorted(pathlib.Path(".whl").glob("*.whl")):
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    name = norm(re.search(r"^Name: (.+)$", text, re.M).group(1).strip())
    have[name] = [l[len("Requires-Dist: "):] for l in text.splitlines() if l.startswith("Requires-Dist: ")]
# optional or unused at run time (checked: never imported by `pixelrl train` on DMC with MUJOCO_GL=egl)
unused = {"websockets"}
missing = set()
for name, reqs in have.items():
    for r in reqs:
        if "extra ==" in r or 'python_version < "3.1' in r.replace("'", '"'):
            continue
        dep = norm(re.match(r"[A-Za-z0-9_.\-]+", r).group(0))
        if dep not in have and dep not in image and dep not in unused:
            missing.add(f"{dep} (needed by {name})")
print("\n".join(sorted(missing)) or "none")
sys.exit(1 if missing else 0)
EOF

echo "== sizes (limit for what travels: 64 MiB = $LIMIT bytes)"
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
gl=$(du -cb .gl/*.deb | tail -1 | cut -f1)
# what else travels: tracked files + untracked files git does not ignore
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | sort -zu \
        | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s+=$1} END {print s+0}')
total=$((whl + gl + tree))
printf '%-34s %10d bytes (%5.1f MiB)\n' ".whl" "$whl" "$(echo "$whl/1048576" | bc -l)" \
  ".gl" "$gl" "$(echo "$gl/1048576" | bc -l)" "working tree (tracked + untracked)" "$tree" \
  "$(echo "$tree/1048576" | bc -l)" "total" "$total" "$(echo "$total/1048576" | bc -l)"
if ((total > LIMIT)); then echo "ERROR: over the 64 MiB the device tool carries" >&2; exit 1; fi
echo "ok: fits, $(( (LIMIT - total) / 1048576 )) MiB to spare"
