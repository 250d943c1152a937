#!/usr/bin/env bash
# Runs the whole test suite: set-up (installs what is missing, builds), then every test through
# CTest. Extra arguments go to ctest, e.g. scripts/test.sh -R Attention
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/sample_data.sh"   # the real corpus some tests train on
ctest --test-dir "${GQE_BUILD_DIR:-$root/build}" --output-on-failure -j "$(nproc)" "$@"
