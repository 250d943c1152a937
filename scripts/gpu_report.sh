#!/usr/bin/env bash
# The GPU numbers of docs/performance.md in one command, on a machine with an NVIDIA GPU:
#   0. the tests that need a GPU (CI has none);
#   1. training throughput, MFU and memory of gqa-250m and gqe-250m at seq 2048 (gqe bench train),
#      also with activation checkpointing, with eager PyTorch (and, with GQE_REPORT_COMPILE=1, torch.compile) on the same step as the bar;
#   2. the prefill table, GQA vs GQE, 2k to 128k tokens (gqe bench prefill);
#   3. 100 steps of configs/tiny/gqe.yaml on the GPU (bf16) and on the CPU (fp32), compared;
#   4. data parallel over NCCL, plain and ZeRO-1, with the communication share (one GPU: a group of one).
#
#   scripts/gpu_report.sh [OUT_DIR]        # default runs/gpu-report; everything lands there
#
# It builds first (scripts/setup.sh). On a machine without network, give it an existing Python with
# torch 2.11 (GQE_VENV=/path/to/venv) and unpacked Debian libraries (GQE_OFFLINE_DEBS=DIR, made by
# `scripts/offline_deps.sh fetch DIR` elsewhere); data/sample must then be carried along too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=$(mkdir -p "${1:-runs/gpu-report}" && cd "${1:-runs/gpu-report}" && pwd)
log=$out/report.txt
: >"$log"
# Each heading says how long the section before it took, so that a short lease shows where it went.
section_start=$(date +%s)
say() {
  local now
  now=$(date +%s)
  printf '\n== %s   [previous section %d s]\n' "$*" "$((now - section_start))" | tee -a "$log"
  section_start=$now
}
run() { "$@" 2>&1 | tee -a "$log"; }

if [[ -n ${GQE_OFFLINE_DEBS:-} ]]; then
  # shellcheck source=scripts/offline_deps.sh
  source scripts/offline_deps.sh use "$GQE_OFFLINE_DEBS"
  export GQE_SKIP_APT=1
fi
command -v nvidia-smi >/dev/null || { echo "gpu_report.sh: no NVIDIA GPU on this machine (nvidia-smi not found)" >&2; exit 2; }
say "device"
run nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
start=$(date +%s)
GQE_TARGETS=${GQE_TARGETS:-"gqe gqe-data model_tests"} scripts/setup.sh >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
say "built in $(($(date +%s) - start)) s"
gqe=${GQE_BUILD_DIR:-build}/gqe
source scripts/lib.sh
python=$(gqe_venv)/bin/python

say "0. the CUDA kernels against the CPU path"
run "${GQE_BUILD_DIR:-build}/model_tests" --gtest_filter='*Cuda*' --gtest_brief=1

say "1. training step, seq 2048, bf16 (gqe bench train)"
run "$gqe" bench train configs/gqe-250m.yaml --steps 20 --warmup 5 --json "$out/bench_train.json" --profile 30
say "1a. the same with activation checkpointing (memory against the extra forward)"
run "$gqe" bench train configs/gqe-250m.yaml --steps 10 --warmup 3 --set train.activation_checkpointing=true \
  --json "$out/bench_train_checkpointing.json"
# The Python references are context, not the report: their failure does not stop it.
say "1b. the same step in eager PyTorch"
run "$python" scripts/bench_eager_pytorch.py configs/gqe-250m.yaml --device cuda --steps 20 --warmup 5 || say "(failed)"
if [[ ${GQE_REPORT_COMPILE:-0} == 1 ]]; then
  say "1c. the same step with torch.compile"
  run "$python" scripts/bench_eager_pytorch.py configs/gqe-250m.yaml --device cuda --steps 20 --warmup 5 --compile ||
    say "(failed)"
fi

say "2. prefill, one sequence, bf16 (gqe bench prefill)"
run "$gqe" bench prefill configs/gqe-250m.yaml --seq-lens 2048,4096,8192,16384,32768,65536,131072 --repeats 5 \
  --json "$out/bench_prefill.json"

say "3. 100 steps of configs/tiny/gqe.yaml: GPU bf16 vs CPU fp32"
[[ -f data/sample/shards/manifest.json ]] || scripts/sample_data.sh
steps=(--set train.tokens=819200)  # 100 x 8192
rm -rf "$out/tiny-cuda" "$out/tiny-cpu"
"$gqe" train configs/tiny/gqe.yaml --run-dir "$out/tiny-cuda" "${steps[@]}" --set train.device=cuda \
  --set train.precision=bf16 >"$out/tiny-cuda.log" 2>&1
"$gqe" train configs/tiny/gqe.yaml --run-dir "$out/tiny-cpu" "${steps[@]}" >"$out/tiny-cpu.log" 2>&1
grep -h "done:" "$out/tiny-cuda.log" "$out/tiny-cpu.log" | tee -a "$log"
# The fused kernels' first-contact check (train.fused_kernels: auto): silent when all agree.
grep -h "kernel disagrees" "$out/tiny-cuda.log" | tee -a "$log" || echo "fused kernels: all agree with ATen" | tee -a "$log"
run "$gqe" compare "$out/tiny-cpu" "$out/tiny-cuda" --out "$out/tiny-compare"
say "4. data parallel over NCCL: overlapped buckets, then ZeRO-1 (gqe bench train --nproc)"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if ((gpus >= 2)); then
  run "$gqe" bench train configs/gqe-250m.yaml --nproc "$gpus" --steps 10 --warmup 3 --json "$out/bench_train_dp.json"
  run "$gqe" bench train configs/gqe-250m.yaml --nproc "$gpus" --steps 10 --warmup 3 --set dist.shard_optimizer=true \
    --json "$out/bench_train_zero1.json"
else
  # One GPU: a real NCCL group of one (dist.backend named) through the same reducer and collectives.
  run "$gqe" bench train configs/gqe-250m.yaml --steps 10 --warmup 3 --set dist.backend=nccl --set dist.shard_optimizer=true \
    --json "$out/bench_train_nccl1.json"
fi
say "finished in $(($(date +%s) - start)) s; everything is in $out"
