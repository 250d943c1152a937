#!/usr/bin/env bash
# Builds gqe on a machine with no network and none of our Debian packages (a GPU box that has CUDA,
# CMake, a compiler and a Python with torch 2.11, such as the device machines of docs/performance.md).
#
#   scripts/offline_deps.sh fetch DIR     # on a Debian 12 machine with network: download the .debs
#   source scripts/offline_deps.sh use DIR  # on the offline machine: unpack them under DIR/root and
#                                           # point CMake, pkg-config, the compiler and the loader there
#
# The packages are the libraries of scripts/setup.sh (and what they need at run time) as Debian 12
# names them, with the two things set-up otherwise takes from PyPI: the sentencepiece sdist and, from
# the pyarrow wheel, Arrow's C++ library (the same whatever the Python). Nothing is installed
# system-wide; set-up installs nothing from PyPI (GQE_OFFLINE=1).
offline_debs=(libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev
              nlohmann-json3-dev libxxhash-dev libxxhash0 zlib1g-dev zlib1g libzstd-dev libzstd1
              libgtest-dev libgloo-dev pkgconf-bin libpkgconf3)

offline_deps_fetch() {
  local dir=$1
  mkdir -p "$dir"
  (cd "$dir" && apt-get download "${offline_debs[@]}") || return 1
  local py
  py=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && source scripts/lib.sh && gqe_venv)/bin/python
  [[ -x $py ]] || py=python3
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$dir" sentencepiece==0.2.2 || return 1
  # Of the pyarrow wheel, only Arrow's and Parquet's C++ libraries and headers, xz-compressed (16 MB
  # instead of the wheel's 55: what travels to a device machine has a size limit).
  local wheel
  wheel=$(mktemp -d)
  "$py" -m pip download -q --no-deps --only-binary :all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
    -d "$wheel" pyarrow==26.0.1 || return 1
  python3 -m zipfile -e "$wheel"/pyarrow-*.whl "$wheel/x" &&
    tar -C "$wheel/x/pyarrow" -cf - include/arrow include/parquet libarrow.so.2600 libparquet.so.2600 |
    xz -T0 -6 >"$dir/arrow-cpp-26.0.1.tar.xz" || return 1
  rm -rf "$wheel"
}

offline_deps_use() {
  local dir root multiarch=x86_64-linux-gnu
  dir=$(cd "$1" && pwd)
  root=$dir/root
  if [[ ! -d $root ]]; then
    for deb in "$dir"/*.deb; do dpkg -x "$deb" "$root"; done
    mkdir -p "$root/arrow" && tar -C "$root/arrow" -xJf "$dir/arrow-cpp-26.0.1.tar.xz"
  fi
  export GQE_OFFLINE=1 GQE_SENTENCEPIECE_SDIST=$dir/sentencepiece-0.2.2.tar.gz GQE_ARROW_DIR=$root/arrow
  [[ -e $root/usr/bin/pkg-config ]] || ln -s pkgconf "$root/usr/bin/pkg-config"
  export PATH=$root/usr/bin:$PATH
  export LD_LIBRARY_PATH=$root/usr/lib/$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CMAKE_PREFIX_PATH=$root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  # The .pc files say prefix=/usr: the sysroot maps their -I and -L paths under $root.
  export PKG_CONFIG_PATH=$root/usr/lib/$multiarch/pkgconfig:$root/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$root
  # Headers no CMake package names (gloo, for torch's ProcessGroupGloo.hpp), searched last.
  export CPLUS_INCLUDE_PATH=$root/usr/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}
  export LIBRARY_PATH=$root/usr/lib/$multiarch${LIBRARY_PATH:+:$LIBRARY_PATH}
}

case ${1:-} in
  fetch) offline_deps_fetch "${2:?usage: offline_deps.sh fetch DIR}" ;;
  use) offline_deps_use "${2:?usage: source offline_deps.sh use DIR}" ;;
  *) echo "usage: offline_deps.sh fetch DIR | source offline_deps.sh use DIR" >&2; return 2 2>/dev/null || exit 2 ;;
esac
