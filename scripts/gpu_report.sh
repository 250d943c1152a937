#!/usr/bin/env bash
# The GPU numbers of docs/performance.md in one command, on a machine with an NVIDIA GPU:
#   0. the tests that need a GPU (CI has none);
#   1. training throughput, MFU and memory of gqa-250m and gqe-250m at seq 2048 (gqe bench train),
#      also with activation checkpointing and with our CUDA kernels off, with eager PyTorch (and, with
#      GQE_REPORT_COMPILE=1, torch.compile) on the same step as the bar;
#   2. the prefill table, GQA vs GQE, 2k to 128k tokens (gqe bench prefill), and a profile of the 2k prefill;
#   3. 100 steps of configs/tiny/gqe.yaml on the GPU (bf16) and on the CPU (fp32), compared;
#   4. data parallel over NCCL, plain and ZeRO-1, with the communication share (one GPU: a group of one);
#      then 3.'s GPU run again through NCCL with ZeRO-1, which must give the same curve;
#   5. our kernels' tests under compute-sanitizer's memcheck, where the machine has it.
#
#   scripts/gpu_report.sh [OUT_DIR]        # default runs/gpu-report; everything lands there
#
# A step that fails is named in the summary at the end and the report goes on with the next one
# (a first run on a GPU must not lose the lease's other numbers to one broken step); the exit
# status is 1 if any step failed. Only a failed build stops it.
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
section=""
failed=()
say() {
  local now
  now=$(date +%s)
  printf '\n== %s   [previous section %d s]\n' "$*" "$((now - section_start))" | tee -a "$log"
  section_start=$now
  section=$*
}
# Runs one step of the report into the log; a failure is remembered, not fatal.
run() {
  set +e
  "$@" 2>&1 | tee -a "$log"
  local status=${PIPESTATUS[0]}
  set -e
  ((status == 0)) || failed+=("$section (exit status $status)")
  return 0
}
# The same for a step whose output goes to its own file; its last lines go to the log on failure.
run_logged() {
  local file=$1 status=0
  shift
  "$@" >"$file" 2>&1 || status=$?
  ((status == 0)) && return 0
  tail -15 "$file" | tee -a "$log"
  failed+=("$section (exit status $status; log: $file)")
}

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
build=${GQE_BUILD_DIR:-build}
gqe=$build/gqe
# The report is about the GPU: a torch without CUDA must fail each step, not measure the CPU.
cuda=(--set train.device=cuda)
source scripts/lib.sh
python=$(gqe_venv)/bin/python

say "0. the CUDA kernels against the CPU path"
run "$build/model_tests" --gtest_filter='*Cuda*' --gtest_brief=1

say "1. training step, seq 2048, bf16 (gqe bench train)"
run "$gqe" bench train configs/gqe-250m.yaml "${cuda[@]}" --steps 20 --warmup 5 --json "$out/bench_train.json" --profile 30
say "1a. the same with activation checkpointing (memory against the extra forward)"
run "$gqe" bench train configs/gqe-250m.yaml "${cuda[@]}" --steps 10 --warmup 3 --set train.activation_checkpointing=true \
  --json "$out/bench_train_checkpointing.json"
say "1b. the same step with our CUDA kernels off (ATen's path): what they save, in this run"
run "$gqe" bench train configs/gqe-250m.yaml "${cuda[@]}" --steps 10 --warmup 3 --set train.fused_kernels=off \
  --json "$out/bench_train_aten.json"
say "1c. the same step in eager PyTorch"
run "$python" scripts/bench_eager_pytorch.py configs/gqe-250m.yaml --device cuda --steps 20 --warmup 5
if [[ ${GQE_REPORT_COMPILE:-0} == 1 ]]; then
  say "1d. the same step with torch.compile"
  run "$python" scripts/bench_eager_pytorch.py configs/gqe-250m.yaml --device cuda --steps 20 --warmup 5 --compile
fi

say "2. prefill, one sequence, bf16 (gqe bench prefill)"
run "$gqe" bench prefill configs/gqe-250m.yaml "${cuda[@]}" --seq-lens 2048,4096,8192,16384,32768,65536,131072 --repeats 5 \
  --json "$out/bench_prefill.json"
# At 2k GQE took 2.2x GQA's time on an H100 and barely more than at 4k: if the GPU is busy for a
# small part of the run, the host's launches are the cost (and CUDA graphs the cure), not kernels.
say "2a. where the 2k prefill's time goes (GPU and host busy against wall time)"
run "$gqe" bench prefill configs/gqe-250m.yaml "${cuda[@]}" --seq-lens 2048 --repeats 5 --profile 25

say "3. 100 steps of configs/tiny/gqe.yaml: GPU bf16 vs CPU fp32"
[[ -f data/sample/shards/manifest.json ]] || scripts/sample_data.sh
steps=(--set train.tokens=819200)  # 100 x 8192
rm -rf "$out/tiny-cuda" "$out/tiny-cpu"
run_logged "$out/tiny-cuda.log" "$gqe" train configs/tiny/gqe.yaml --run-dir "$out/tiny-cuda" "${steps[@]}" "${cuda[@]}" \
  --set train.precision=bf16
run_logged "$out/tiny-cpu.log" "$gqe" train configs/tiny/gqe.yaml --run-dir "$out/tiny-cpu" "${steps[@]}"
grep -h "done:" "$out/tiny-cuda.log" "$out/tiny-cpu.log" | tee -a "$log" || true
# The fused kernels' first-contact check (train.fused_kernels: auto): silent when all agree.
grep -h "kernel disagrees" "$out/tiny-cuda.log" | tee -a "$log" || echo "fused kernels: no disagreement logged" | tee -a "$log"
[[ -f $out/tiny-cuda/metrics.jsonl && -f $out/tiny-cpu/metrics.jsonl ]] &&
  run "$gqe" compare "$out/tiny-cpu" "$out/tiny-cuda" --out "$out/tiny-compare"
say "4. data parallel over NCCL: overlapped buckets, then ZeRO-1 (gqe bench train --nproc)"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if ((gpus >= 2)); then
  run "$gqe" bench train configs/gqe-250m.yaml "${cuda[@]}" --nproc "$gpus" --steps 10 --warmup 3 --json "$out/bench_train_dp.json"
  run "$gqe" bench train configs/gqe-250m.yaml "${cuda[@]}" --nproc "$gpus" --steps 10 --warmup 3 --set dist.shard_optimizer=true \
    --json "$out/bench_train_zero1.json"
else
  # One GPU: a real NCCL group of one (dist.backend named) through the same reducer and collectives.
  run "$gqe" bench train configs/gqe-250m.yaml "${cuda[@]}" --steps 10 --warmup 3 --set dist.backend=nccl --set dist.shard_optimizer=true \
    --json "$out/bench_train_nccl1.json"
fi
say "4b. 3.'s 100 GPU steps again through NCCL (overlapped buckets, ZeRO-1, parameters gathered in place during the forward pass): the same curve?"
run_logged "$out/tiny-nccl.log" "$gqe" train configs/tiny/gqe.yaml --run-dir "$out/tiny-nccl" "${steps[@]}" "${cuda[@]}" \
  --set train.precision=bf16 --set dist.backend=nccl --set dist.shard_optimizer=true
# Not bitwise: cuDNN's attention backward may sum in any order on a GPU, run to run. A reducer that
# loses or misplaces gradients, or an optimizer shard that updates the wrong slice, is far off.
[[ -f $out/tiny-cuda/metrics.jsonl && -f $out/tiny-nccl/metrics.jsonl ]] && run "$python" - "$out"/tiny-{cuda,nccl}/metrics.jsonl <<'PY'
import json, math, sys
runs = [{r["step"]: r for r in map(json.loads, open(f)) if "loss" in r} for f in sys.argv[1:]]
steps = sorted(set(runs[0]) & set(runs[1]))
diff = [abs(runs[0][s]["loss"] - runs[1][s]["loss"]) / abs(runs[0][s]["loss"]) for s in steps]
print(f"{len(steps)} steps: loss relative difference max {max(diff, default=math.nan):.2e}, last {diff[-1] if diff else math.nan:.2e}")
sys.exit(0 if steps and all(d < 2e-2 for d in diff) else 1)
PY
# Our kernels' memory accesses, checked once (exit 3: it found errors; other failures are the tool's).
# Last: it is the slowest step per result, and a lease that ends during it has everything else.
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [[ -x $sanitizer ]]; then
  say "5. the kernel tests under compute-sanitizer (memcheck)"
  run timeout 120 "$sanitizer" --tool memcheck --error-exitcode 3 --print-limit 20 \
    "$build/model_tests" --gtest_filter='Rope.Cuda*:SwiGLU.Cuda*:RMSNorm.Cuda*:CrossEntropy.Cuda*' --gtest_brief=1
fi
say "finished in $(($(date +%s) - start)) s; everything is in $out"
if ((${#failed[@]})); then
  printf 'FAILED (%d):\n' "${#failed[@]}" | tee -a "$log"
  printf '  %s\n' "${failed[@]}" | tee -a "$log"
  exit 1
fi
echo "every step passed" | tee -a "$log"
