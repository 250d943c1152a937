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
      libsentencepiece-dev sentencepiece libgtest-dev
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
# matplotlib first: it brings numpy, which torch looks for when imported below.
"$vpy" -c 'import matplotlib' 2>/dev/null || { say "installing matplotlib"; "$vpy" -m pip install -q matplotlib; }
# The ecosystem the tests check gqe against: transformers loads gqe's exports (GQA as Llama, GQE
# through modeling_gqe.py); tensorboard reads the trainer's event files; lm-evaluation-harness
# (with accelerate, which its HF model needs) scores an export as gqe eval does.
for pkg in transformers==5.24.0 tensorboard==2.21.0 lm_eval==0.4.13 accelerate==1.15.0; do
  "$vpy" -c "import importlib.metadata as m, sys; sys.exit(m.version('${pkg%%==*}') != '${pkg##*==}')" 2>/dev/null ||
    { say "installing $pkg"; "$vpy" -m pip install -q "$pkg"; }
done
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
if [[ ! -f $build_dir/build.ninja ]] || [[ $(cat "$build_dir/.torch_prefix" 2>/dev/null) != "$torch_prefix" ]]; then
  say "configuring $build_dir ($build_type) against $torch_prefix"
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DPython3_EXECUTABLE="$vpy" -DGQE_VENV="$venv"
  echo "$torch_prefix" > "$build_dir/.torch_prefix"
fi
say "building"
# shellcheck disable=SC2086  # a list of target names
cmake --build "$build_dir" -j "$(nproc)" ${GQE_TARGETS:+--target $GQE_TARGETS}
say "done: $build_dir/gqe"
