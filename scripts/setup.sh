#!/usr/bin/env bash
# Installs what gqe needs and builds it. Safe to run again: it only installs what is missing and
# only rebuilds what changed.
#
#   scripts/setup.sh                 # Debian packages, .venv with torch, configure + build
#
# Environment:
#   GQE_VENV=DIR        virtual environment to use/create (default: .venv in the repository);
#                       point it outside the clone to share one venv between clones (CI does).
#   LIBTORCH=DIR        an unpacked LibTorch zip to build against instead of the torch wheel
#   Torch_DIR=DIR       same, pointing at DIR/share/cmake/Torch
#   GQE_BUILD_DIR=DIR   build directory (default: build)
#   GQE_BUILD_TYPE=T    CMake build type (default: Release)
#   GQE_SKIP_APT=1      do not touch system packages (you installed them yourself)
#   GQE_TARGETS="gqe"   build only these targets (default: everything, tests included)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source "$root/scripts/lib.sh"
venv=$(gqe_venv)
build_dir=${GQE_BUILD_DIR:-$root/build}
build_type=${GQE_BUILD_TYPE:-Release}
torch_version=2.11.0

say() { printf '[setup] %s\n' "$*"; }

# --- 1. system packages ------------------------------------------------------------------------
debs=(build-essential cmake ninja-build ccache pkg-config python3-venv
      libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libxxhash-dev zlib1g-dev libzstd-dev zstd
      sentencepiece libgtest-dev
      libgloo-dev)  # declarations only: ProcessGroupGloo.hpp includes them, libtorch holds the code
if [[ ${GQE_SKIP_APT:-0} != 1 ]]; then
  install_missing_debs "${debs[@]}"
fi

# --- 2. Python venv with torch (LibTorch comes from the wheel) and matplotlib ------------------
python=${PYTHON:-python3}
if [[ ! -x $venv/bin/python ]]; then
  say "creating venv $venv"
  "$python" -m venv "$venv"
fi
vpy=$venv/bin/python
# Installs PKG==VERSION into the venv unless that version is there. Offline (GQE_OFFLINE=1, set by
# scripts/offline_deps.sh use) nothing is installed: the tests that need a package skip without it.
pip_install() {
  local pkg=$1
  "$vpy" -c "import importlib.metadata as m, sys; sys.exit(m.version('${pkg%%==*}') != '${pkg##*==}')" 2>/dev/null && return
  [[ ${GQE_OFFLINE:-0} == 1 ]] && { say "offline: not installing $pkg"; return; }
  say "installing $pkg"
  "$vpy" -m pip install -q "$pkg"
}
# matplotlib first: it brings numpy, which torch looks for when imported below.
"$vpy" -c 'import matplotlib' 2>/dev/null || pip_install matplotlib==3.11.2
# The ecosystem the tests check gqe against: transformers loads gqe's exports (GQA as Llama, GQE
# through modeling_gqe.py); tensorboard reads the trainer's event files; lm-evaluation-harness
# (with accelerate, which its HF model needs) scores an export as gqe eval does. Then Apache
# Arrow's C++ library for reading Parquet: the pyarrow wheel ships it with its headers, and CMake
# takes them from there (GQE_ARROW_DIR names another copy). The PyPI sentencepiece wheel is the
# baseline gqe bench encode measures gqe-data against.
for pkg in transformers==5.24.0 tensorboard==2.21.0 lm_eval==0.4.13 accelerate==1.15.0 pyarrow==26.0.1 sentencepiece==0.2.3; do
  pip_install "$pkg"
done
# sentencepiece itself is built from the source PyPI distributes (its sdist holds the C++ library,
# abseil and its CMake build) into gqe-data: 0.2.2 encodes ~1.9x faster per core than Debian's 0.1.97.
downloads=${GQE_DOWNLOADS:-$HOME/.cache/gqe/downloads}
spm_sdist=${GQE_SENTENCEPIECE_SDIST:-$downloads/sentencepiece-0.2.2.tar.gz}
spm_sha256=3d2b5e824b5622038dc7b490897efe05ebbbb9e7350fc142f3ecc8789ef9bdf6
if [[ ! -f $spm_sdist ]]; then
  [[ -z ${GQE_SENTENCEPIECE_SDIST:-} ]] || { echo "[setup] GQE_SENTENCEPIECE_SDIST=$spm_sdist: no such file" >&2; exit 1; }
  say "fetching the sentencepiece 0.2.2 source distribution from PyPI"
  mkdir -p "$downloads"
  "$vpy" -m pip download -q --no-deps --no-binary :all: -d "$downloads" sentencepiece==0.2.2
fi
if [[ $(basename "$spm_sdist") == sentencepiece-0.2.2.tar.gz ]] && ! echo "$spm_sha256  $spm_sdist" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "[setup] $spm_sdist: not the sentencepiece 0.2.2 sdist gqe pins (sha256 differs); delete it and run again" >&2
  exit 1
fi
if [[ -z ${LIBTORCH:-}${Torch_DIR:-} ]]; then
  have=$("$vpy" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
  if [[ $have != "$torch_version" ]]; then
    say "installing torch==$torch_version into $venv (pip's cache makes later installs fast)"
    "$vpy" -m pip install -q "torch==$torch_version"
  fi
  torch_prefix=$("$vpy" -c 'import torch; print(torch.utils.cmake_prefix_path)')
elif [[ -n ${LIBTORCH:-} ]]; then
  torch_prefix=$LIBTORCH
else
  torch_prefix=$(cd "$Torch_DIR/../../.." && pwd)
fi

# --- 3. configure and build --------------------------------------------------------------------
export CCACHE_BASEDIR=$root          # lets clones at other paths share cache hits
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
configured_with="$torch_prefix $spm_sdist ${GQE_ARROW_DIR:-}"
if [[ ! -f $build_dir/build.ninja ]] || [[ $(cat "$build_dir/.configured_with" 2>/dev/null) != "$configured_with" ]]; then
  say "configuring $build_dir ($build_type) against $torch_prefix"
  # --fresh: a torch, sentencepiece or Arrow from elsewhere must not keep the old one's cached paths.
  cmake --fresh -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DPython3_EXECUTABLE="$vpy" -DGQE_VENV="$venv" \
    -DGQE_SENTENCEPIECE_SDIST="$spm_sdist"
  echo "$configured_with" > "$build_dir/.configured_with"
fi
say "building"
# shellcheck disable=SC2086  # a list of target names
cmake --build "$build_dir" -j "$(nproc)" ${GQE_TARGETS:+--target $GQE_TARGETS}
say "done: $build_dir/gqe"
