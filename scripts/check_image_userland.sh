#!/usr/bin/env bash
# Replays the Dockerfile's build where there is no Docker engine: an Ubuntu 24.04 chroot (the
# image's base, by debootstrap) with this machine's CUDA toolkit bound in at /usr/local/cuda, the
# Dockerfile's packages, then scripts/setup.sh as the Dockerfile runs it, then `gqe info`; with
# --tests the whole test suite too. Needs root, debootstrap and network; about 15 minutes on 2 cores
# (30 with --tests). It checks the userland (packages, compiler, libraries, nvcc as host compiler),
# not the CUDA base image itself.
#
# With --offline it replays a GPU machine without network instead (docs/performance.md): none of our
# packages in the chroot, only a compiler, CMake and Ninja; this machine's venv with torch bound in
# (as the device's /opt/torch/.venv); the files of `scripts/offline_deps.sh fetch`; then, with the
# network cut (unshare -n), what scripts/gpu_report.sh does before it needs a GPU: set-up builds
# gqe, gqe-data and model_tests, and 20 steps of configs/tiny/gqe.yaml train on the CPU.
#
#   sudo scripts/check_image_userland.sh [DIR] [--tests|--offline]   # DIR: where the chroot lives (kept for reuse)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=/var/tmp/gqe-noble
tests=0
offline=0
for a in "$@"; do
  case $a in
    --tests) tests=1 ;;
    --offline) offline=1 ;;
    *) dir=$a ;;
  esac
done
((offline && tests)) && { echo "check_image_userland.sh: --tests and --offline replay different machines; choose one" >&2; exit 2; }
say() { printf '[image] %s\n' "$*"; }

if [[ ! -x $dir/usr/bin/apt-get ]]; then
  say "debootstrap Ubuntu 24.04 into $dir"
  # Debian's debootstrap may not know noble by name; gutsy's script serves every Ubuntu release.
  debootstrap --variant=minbase --no-check-gpg --components=main,universe noble "$dir" \
    http://archive.ubuntu.com/ubuntu /usr/share/debootstrap/scripts/gutsy
fi
cp /etc/resolv.conf "$dir/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || true  # proxies' CAs
mounted=()
bind() { mkdir -p "$dir$2"; mount "${@:3}" "$1" "$dir$2"; mounted=("$dir$2" "${mounted[@]}"); }
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" || true; done; }
trap cleanup EXIT
bind /proc /proc --rbind
bind /sys /sys --rbind
bind /dev /dev --rbind
[[ -d /usr/local/cuda ]] && bind /usr/local/cuda /usr/local/cuda --bind -o ro

say "copying the working tree to $dir/gqe"
rm -rf "$dir/gqe"
mkdir -p "$dir/gqe"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dir/gqe")

if ((offline)); then
  source "$root/scripts/lib.sh"
  venv=$(gqe_venv)
  [[ -x $venv/bin/python ]] || { echo "--offline: no venv with torch at $venv (run scripts/setup.sh first)" >&2; exit 1; }
  python_home=$(sed -n 's/^home = //p' "$venv/pyvenv.cfg")  # the interpreter the venv was made from
  bind "$venv" /opt/torch/.venv --bind -o ro
  [[ $python_home == /usr/bin ]] || bind "$(dirname "$python_home")" "$(dirname "$python_home")" --bind -o ro
  say "fetching the offline files into $dir/gqe/.devdeps"
  "$root/scripts/offline_deps.sh" fetch "$dir/gqe/.devdeps" >/dev/null
  [[ ! -d $root/data/sample/shards ]] || (cd "$root" && cp -r --parents data/sample/shards "$dir/gqe/")
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive bash -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends build-essential cmake ninja-build >/dev/null"
  # A clean chroot of the distribution's compiler, CMake and Ninja; nothing reachable from here on.
  unshare -n chroot "$dir" env -i PATH=/usr/local/cuda/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root bash -euo pipefail -c "
    cd /gqe && rm -rf build
    source scripts/offline_deps.sh use .devdeps
    time GQE_SKIP_APT=1 GQE_VENV=/opt/torch/.venv GQE_TARGETS='gqe gqe-data model_tests' scripts/setup.sh >/tmp/build.log 2>&1 ||
      { tail -30 /tmp/build.log; exit 1; }
    [[ -f data/sample/shards/manifest.json ]] || { echo 'no data/sample/shards: run scripts/sample_data.sh here first'; exit 1; }
    rm -rf /tmp/tiny && build/gqe train configs/tiny/gqe.yaml --run-dir /tmp/tiny --set train.tokens=163840 2>&1 | grep 'done:'"
  say "done: offline, the device's steps build gqe and train"
  exit 0
fi

# The Dockerfile's RUN lines, in order (this environment kept: a proxy's settings for pip among it).
chroot "$dir" env PATH=/usr/local/cuda/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive \
  bash -euo pipefail -c "
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
    cd /gqe
    TORCH_CUDA_ARCH_LIST='8.0 9.0' GQE_VENV=/opt/gqe-venv GQE_TARGETS='gqe gqe-data' scripts/setup.sh
    build/gqe info configs/gqe-250m.yaml | head -3
    if (( $tests )); then GQE_VENV=/opt/gqe-venv scripts/test.sh; fi"
say "done: the Dockerfile's steps build gqe on Ubuntu 24.04"
