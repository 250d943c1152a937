#include "bench/benchmarks.h"

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <c10/core/Event.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include "model/autocast.h"
#include "model/cross_entropy.h"
#include "model/decoder.h"
#include "model/model_info.h"
#include "train/adamw.h"
#include "dist/communicator.h"
#include "dist/device_info.h"
#include "dist/gradient_reducer.h"
#include "train/update.h"

namespace gqe {
namespace {

using Clock = std::chrono::steady_clock;

void synchronize(at::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

template <class F> double median_seconds(int repeats, at::Device device, F&& run) {
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    synchronize(device);
    const auto start = Clock::now();
    run();
    synchronize(device);
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

// Kineto, as torch.profiler in Python.
Profile profile_kernels(at::Device device, const std::function<void()>& run) {
  namespace profiler = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<ActivityType> activities =
      device.is_cuda() ? std::set<ActivityType>{ActivityType::CPU, ActivityType::CUDA} : std::set<ActivityType>{ActivityType::CPU};
  // Without a GPU, Kineto's start-up would log an ERROR about the missing CUDA devices.
  if (!device.is_cuda()) setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
  profiler::prepareProfiler(config, activities);
  profiler::enableProfiler(config, activities);
  run();
  synchronize(device);
  const std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();

  std::vector<ProfiledSpan> device_spans, host_spans;
  for (const profiler::KinetoEvent& e : result->events()) {
    if (e.durationNs() == 0) continue;
    if (e.deviceType() == device.type()) device_spans.push_back({e.startNs(), e.endNs(), e.startThreadId(), e.name()});
    else if (e.deviceType() == c10::DeviceType::CPU) host_spans.push_back({e.startNs(), e.endNs(), e.startThreadId(), e.name()});
  }
  Profile profile;
  profile.device = total_by_name(std::move(device_spans), /*nested=*/device.is_cpu());
  profile.host = total_by_name(std::move(host_spans), /*nested=*/true);
  return profile;
}

std::vector<KernelTime> total_by_name(std::vector<ProfiledSpan> spans, bool nested) {
  std::sort(spans.begin(), spans.end(), [](const ProfiledSpan& a, const ProfiledSpan& b) {
    return std::tie(a.thread, a.start_ns, b.end_ns) < std::tie(b.thread, b.start_ns, a.end_ns);  // parents first
  });
  std::vector<size_t> open;  // the spans enclosing the current one, innermost last
  std::vector<double> self(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    const ProfiledSpan& s = spans[i];
    self[i] = static_cast<double>(s.end_ns - s.start_ns) * 1e-9;
    if (!nested) continue;
    while (!open.empty() && (spans[open.back()].thread != s.thread || spans[open.back()].end_ns <= s.start_ns)) open.pop_back();
    if (!open.empty()) self[open.back()] -= self[i];
    open.push_back(i);
  }
  std::map<std::string, KernelTime> by_name;
  for (size_t i = 0; i < spans.size(); ++i) {
    KernelTime& k = by_name[spans[i].name];
    k.name = spans[i].name;
    k.seconds += self[i];
    k.calls += 1;
  }
  std::vector<KernelTime> out;
  for (auto& [name, k] : by_name) out.push_back(std::move(k));
  std::sort(out.begin(), out.end(), [](const KernelTime& a, const KernelTime& b) { return a.seconds > b.seconds; });
  return out;
}

ModelConfig as_gqa(ModelConfig c) {
  c.attention.type = AttentionType::gqa;
  return c;
}

ModelConfig as_gqe(ModelConfig c) {
  if (c.attention.type != AttentionType::gqe) {
    c.attention.type = AttentionType::gqe;
    c.attention.top_k = 1;
    c.attention.variant = GqeVariant::gqe;
  }
  return c;
}

std::vector<PrefillTiming> bench_prefill(const ModelConfig& config, const std::vector<int64_t>& lengths, int repeats,
                                         at::Device device, bool bf16, bool profile) {
  std::vector<PrefillTiming> out;
  torch::manual_seed(0);
  Decoder gqa(as_gqa(config)), gqe(as_gqe(config));
  for (Decoder* m : {&gqa, &gqe}) {
    (*m)->to(device);
    (*m)->eval();
  }
  c10::InferenceMode inference;  // no autograd bookkeeping at all, as a server would run it
  for (int64_t n : lengths) {
    const at::Tensor tokens = at::randint(config.vocab_size, {1, n}, at::TensorOptions().dtype(at::kLong)).to(device);
    PrefillTiming t;
    t.tokens = n;
    for (auto [model, seconds] : {std::pair{&gqa, &t.gqa_seconds}, std::pair{&gqe, &t.gqe_seconds}}) {
      auto run = [&] {
        AutocastScope autocast(device.type(), bf16);
        (*model)->forward_last(tokens, 1).logits.sum().item<float>();
      };
      run();  // warm-up
      *seconds = median_seconds(repeats, device, run);
      if (profile) (model == &gqa ? t.gqa_profile : t.gqe_profile) = profile_kernels(device, run);
    }
    out.push_back(t);
  }
  return out;
}

TrainTiming bench_train_step(const Config& config, Communicator& comm, int steps, int warmup, at::Device device,
                             Profile* profile, int profile_steps) {
  const ModelConfig& m = config.model;
  TrainTiming t;
  t.name = m.attention.type == AttentionType::gqa ? "gqa" : std::string("gqe/") + enum_name(m.attention.variant);
  auto peak = std::make_unique<PeakMemory>(device);  // parameters, optimizer state, activations
  torch::manual_seed(0);
  Decoder model(m);
  model->to(device);
  model->set_activation_checkpointing(config.train.activation_checkpointing);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  GradientReducer reducer(comm, named, reducer_options(config.dist));
  std::vector<OptimizedTensor> optimized;
  std::vector<at::Tensor> grads;
  for (const GradientReducer::Slice& s : reducer.slices()) optimized.push_back({s.name, s.value, s.dims}), grads.push_back(s.grad);
  AdamW optimizer(optimized, config.train.optimizer);
  GradClipper clipper(config.train.clip, device);
  const int64_t B = config.train.micro_batch_size, L = config.data.seq_len;
  torch::manual_seed(static_cast<uint64_t>(comm.rank()) + 1);  // each rank its own batch
  const at::Tensor tokens = at::randint(m.vocab_size, {B, L + 1}, at::TensorOptions().dtype(at::kLong)).to(device);
  const bool bf16 = config.train.precision == Precision::bf16;
  const double aux_coef = m.attention.type == AttentionType::gqe ? m.attention.aux_coef : 0.0;
  // Exposed communication: from the end of the backward pass's work on the compute stream to the
  // reduced gradients, and the parameters' all-gather (sharded). The stream is synchronized there,
  // which costs a little overlap of the host with the device. With dist.overlap_param_gather the
  // forward pass waits for the gather: on the CPU the host waits; on a GPU the compute stream does,
  // and timed events on each side of the wait measure its stall.
  double comm_seconds = 0;
  const c10::impl::VirtualGuardImpl guard(device.type());
  std::vector<std::pair<c10::Event, c10::Event>> stalls;
  if (reducer.sharded())
    model->set_parameter_wait([&](const std::vector<at::Tensor>& p) {
      if (!device.is_cuda()) return void(comm_seconds += reducer.wait_for(p));
      auto& [before, after] = stalls.emplace_back(c10::Event(device.type(), c10::EventFlag::BACKEND_DEFAULT),
                                                  c10::Event(device.type(), c10::EventFlag::BACKEND_DEFAULT));
      before.record(guard.getStream(device));
      reducer.wait_for(p);
      after.record(guard.getStream(device));
    });
  auto stream_sync = [&] {
    if (!device.is_cuda()) return;
    guard.getStream(device).synchronize();
    for (const auto& [before, after] : stalls) comm_seconds += before.elapsedTime(after) * 1e-3;  // ms
    stalls.clear();
  };
  auto step = [&] {
    reducer.zero_grad();
    reducer.arm();
    at::Tensor loss;
    {
      AutocastScope autocast(device.type(), bf16);
      const DecoderOutput out = model->forward(tokens.slice(1, 0, L));
      loss = (token_cross_entropy(out.logits, tokens.slice(1, 1)) + aux_coef * out.aux_loss) / comm.world();
    }
    loss.backward();
    stream_sync();
    const auto reduce_start = std::chrono::steady_clock::now();
    reducer.reduce();
    at::Tensor norm = gradient_norm(grads).to(device);
    if (reducer.sharded()) {
      norm = norm.square();
      comm.all_reduce_sum({norm});
      norm = norm.sqrt();
    }
    stream_sync();
    comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - reduce_start).count();
    clip_and_step(optimizer, clipper, grads, norm, loss.detach(), 1e-4);  // as gqe train's: norm, clipping, AdamW
    stream_sync();
    comm_seconds += reducer.gather_parameters();
  };
  for (int i = 0; i < warmup; ++i) step();
  comm_seconds = 0;
  const auto timed_start = std::chrono::steady_clock::now();
  t.step_seconds = median_seconds(steps, device, step);
  t.comm_share = comm_seconds / std::chrono::duration<double>(std::chrono::steady_clock::now() - timed_start).count();
  t.peak_memory = peak->bytes();
  peak.reset();  // before the profiler, which takes the same thread-local slot on the CPU
  t.tokens_per_second = static_cast<double>(B * L * comm.world()) / t.step_seconds;
  t.flops_per_token = describe_model(config).train_flops_per_token();
  // Against the bf16 peak: only a bf16 step has one to compare with.
  if (const auto peak_flops = peak_bf16_flops(device_name(device)); peak_flops && bf16)
    t.mfu = t.tokens_per_second * t.flops_per_token / (*peak_flops * comm.world());
  if (profile)
    *profile = profile_kernels(device, [&] {
      for (int i = 0; i < profile_steps; ++i) step();
    });
  return t;
}

std::vector<CommTiming> bench_comm(Communicator& comm, at::Device device, const std::vector<int64_t>& sizes, int repeats) {
  const int64_t W = comm.world();
  const double rank_value = comm.rank() + 1, sum = static_cast<double>(W * (W + 1) / 2);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  std::vector<CommTiming> out;
  for (int64_t size : sizes) {
    const int64_t n = std::max<int64_t>(W, size / 4 / W * W), part = n / W;  // whole shards
    struct Op {
      const char* name;
      double bus;  // busbw / algbw
      std::function<void()> run;
      std::function<bool()> right;  // after one run from filled inputs
      std::function<void()> fill;
    };
    at::Tensor whole = at::empty({n}, f32), shard = at::empty({part}, f32);
    const std::vector<Op> ops{
        {"all-reduce", 2.0 * static_cast<double>(W - 1) / static_cast<double>(W), [&] { comm.all_reduce_flat(whole); },
         [&] { return whole.eq(sum).all().item<bool>(); }, [&] { whole.fill_(rank_value); }},
        {"reduce-scatter", static_cast<double>(W - 1) / static_cast<double>(W), [&] { comm.reduce_scatter_sum(shard, whole); },
         [&] { return shard.eq(sum).all().item<bool>(); }, [&] { whole.fill_(rank_value); }},
        {"all-gather", static_cast<double>(W - 1) / static_cast<double>(W), [&] { comm.all_gather_flat(whole, shard); },
         [&] {
           const at::Tensor expected = at::arange(1, W + 1, f32).repeat_interleave(part);
           return whole.eq(expected).all().item<bool>();
         },
         [&] { shard.fill_(rank_value); }}};
    for (const Op& op : ops) {
      op.fill();
      op.run();
      synchronize(device);
      if (!op.right())
        throw std::runtime_error(fmt::format("bench comm: {} of {} bytes gave a wrong result on rank {}", op.name, n * 4, comm.rank()));
      std::vector<double> times;
      for (int r = 0; r < repeats; ++r) {
        comm.barrier();
        synchronize(device);
        const auto start = std::chrono::steady_clock::now();
        op.run();
        synchronize(device);
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
      std::nth_element(times.begin(), times.begin() + static_cast<long>(times.size() / 2), times.end());
      CommTiming t{op.name, n * 4, times[times.size() / 2]};
      t.algbw = static_cast<double>(t.bytes) / t.seconds;
      t.busbw = t.algbw * op.bus;
      out.push_back(t);
    }
  }
  return out;
}

double bench_loader(std::shared_ptr<const TokenStream> stream, const LoaderOptions& options, uint64_t count) {
  TrainLoader loader(std::move(stream), options);
  for (uint64_t i = 0; i < std::max<uint64_t>(1, count / 10); ++i) loader.next();  // warm-up: page cache, permutation
  uint64_t checksum = 0;
  const double seconds = median_seconds(1, at::Device(at::kCPU), [&] {
    for (uint64_t i = 0; i < count; ++i) checksum += static_cast<uint64_t>(loader.next().tokens.back());
  });
  if (checksum == UINT64_MAX) std::abort();  // keeps the batches from being optimised away
  return static_cast<double>(count) / seconds;
}

}  // namespace gqe
