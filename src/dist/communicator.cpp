#include "dist/communicator.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Logging.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#ifdef USE_C10D_NCCL  // defined whenever the torch in use was built with NCCL (i.e. with CUDA)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "dist/launcher.h"
#include "dist/rendezvous.h"
#include "dist/watchdog.h"

namespace gqe {

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> group;
  std::string backend;
  at::Device device{at::kCPU};
  std::chrono::milliseconds timeout{0};
  std::unique_ptr<Watchdog> watchdog;  // distributed jobs only
};

namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

bool loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0; }

// `origin`: the file that set dist.backend (none where it is not known).
void check_backend(DistBackend backend, at::Device device, const std::string& origin) {
  if (backend == DistBackend::nccl && !device.is_cuda())
    throw UserError(fmt::format("{}dist.backend is nccl, but training runs on the CPU (use gloo or auto)",
                                origin.empty() ? "" : origin + ": "));
}

}  // namespace

void quiet_torch_warnings() {
  if (std::getenv("GQE_DEBUG") || std::getenv("TORCH_CPP_LOG_LEVEL")) return;
  FLAGS_caffe2_log_level = c10::GLOG_ERROR;
}

at::Device rank_device(DeviceKind kind, const DistEnvironment& env, const std::string& origin) {
  const bool available = at::hasCUDA() && at::getNumGPUs() > 0;
  if (kind == DeviceKind::cuda && !available)
    throw UserError(fmt::format("{}: train.device is cuda, but no CUDA device is available", origin));
  if (kind == DeviceKind::cpu || !available) return at::Device(at::kCPU);
  const std::optional<int> gpu = rank_gpu(env, at::getNumGPUs(), std::getenv("CUDA_VISIBLE_DEVICES") != nullptr);
  if (!gpu)
    throw UserError(fmt::format("{}: train.device: local rank {} of {} has no GPU of its own ({} here)", origin,
                                env.local_rank, env.local_world, at::getNumGPUs()));
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(*gpu));
}

std::optional<int> rank_gpu(const DistEnvironment& env, size_t visible, bool cuda_visible_devices) {
  if (static_cast<size_t>(env.local_rank) < visible) return env.local_rank;
  // One GPU in sight of a task past the first: SLURM bound it to this task. (gqe's launcher and
  // torchrun bind nothing: there the ranks would share it.)
  if (visible == 1 && env.source == "SLURM" && cuda_visible_devices) return 0;
  return std::nullopt;
}

at::Device job_device(const LoadedConfig& config, const DistEnvironment& env) {
  const at::Device device = rank_device(config.config.train.device, env, config.origin("train.device"));
  check_backend(config.config.dist.backend, device, config.origin("dist.backend"));
  return device;
}


Communicator::Communicator(const DistEnvironment& env, DistBackend backend, at::Device device, std::chrono::seconds timeout,
                           int64_t bucket_bytes)
    : env_(env), impl_(std::make_unique<Impl>()), bucket_bytes_(bucket_bytes) {
  impl_->timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  impl_->device = device;
  // The backend's own waits end a little after the watchdog's verdict, so that a rank that stopped
  // answering is named by the watchdog rather than reported as whichever collective waited for it.
  const auto wait = impl_->timeout + Watchdog::kBackendLag;
  // One process has no group, unless dist.backend names one: then it is a real group of one (as
  // init_process_group with world_size 1), so a machine with one GPU can run the NCCL path.
  if (!env.distributed()) {
    if (backend == DistBackend::auto_) return;
    if (env.source == DistEnvironment{}.source) env_.master_addr = "127.0.0.1", env_.master_port = free_port();
  }
  check_backend(backend, device, "");
  const bool nccl = backend == DistBackend::nccl || (backend == DistBackend::auto_ && device.is_cuda());
  try {
    impl_->store = join_job(env_, wait);
    if (nccl) {
#ifdef USE_C10D_NCCL
      c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(device);
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = wait;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, env.rank, env.world, options);
      impl_->backend = "nccl";
#else
      throw UserError("dist.backend: this build of torch has no NCCL");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create(wait);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (loopback(env_.master_addr))
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world, options);
      impl_->backend = "gloo";
    }
    impl_->watchdog = std::make_unique<Watchdog>(connect_store(env_, impl_->timeout, false), env.rank, env.world,
                                                 impl_->timeout, fmt::format("{}:{}", env_.master_addr, env_.master_port));
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(cannot_join(env_, wait, first_line(e.what())));
  }
}

Communicator::~Communicator() = default;

std::string Communicator::backend_name() const { return grouped() ? impl_->backend : "none (one process)"; }

bool Communicator::grouped() const { return impl_->group != nullptr; }

template <class F> void Communicator::guarded(const char* what, F&& f) {
  try {
    if (!impl_->watchdog) return f();
    const Watchdog::Waiting waiting = impl_->watchdog->waiting(what);  // a backstop to the backend's timeout
    f();
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("rank {}: {} failed (another rank died or hangs?): {}", env_.rank, what, first_line(e.what())));
  }
}

void Communicator::finish() {
  if (!grouped()) return;
  impl_->watchdog->stop();
  barrier();
}

void Communicator::barrier() {
  if (!grouped()) return;
  // NCCL's barrier is an all-reduce on a GPU: this rank's, named, rather than the one NCCL would
  // guess from the global rank (rank % GPUs: another than LOCAL_RANK's where a node runs fewer
  // ranks than it has GPUs, and a second CUDA context and communicator there).
  c10d::BarrierOptions options;
  if (impl_->device.is_cuda()) options.device_ids = {impl_->device.index()};
  guarded("barrier", [&] { impl_->group->barrier(options)->wait(); });
}

void Communicator::Pending::wait() {
  if (wait_) std::exchange(wait_, nullptr)();
}

Communicator::Pending Communicator::start_all_reduce(at::Tensor& t) {
  Pending p;
  if (!grouped()) return p;
  c10::intrusive_ptr<c10d::Work> work;
  guarded("all-reduce", [&] {
    std::vector<at::Tensor> one{t};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;  // Gloo has no AVG: callers divide
    work = impl_->group->allreduce(one, options);
  });
  p.wait_ = [this, work] { guarded("all-reduce", [&] { work->wait(); }); };
  return p;
}

Communicator::Pending Communicator::start_reduce_scatter(at::Tensor& out, at::Tensor& in) {
  Pending p;
  if (!grouped()) {
    out.copy_(in.narrow(0, 0, out.numel()));
    return p;
  }
  c10::intrusive_ptr<c10d::Work> work;
  guarded("reduce-scatter", [&] {
    c10d::ReduceScatterOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    work = impl_->group->_reduce_scatter_base(out, in, options);
  });
  p.wait_ = [this, work] { guarded("reduce-scatter", [&] { work->wait(); }); };
  return p;
}

Communicator::Pending Communicator::start_all_gather(at::Tensor& out, at::Tensor& in) {
  Pending p;
  if (!grouped()) {
    if (in.data_ptr() != out.data_ptr()) out.copy_(in);
    return p;
  }
  c10::intrusive_ptr<c10d::Work> work;
  guarded("all-gather", [&] { work = impl_->group->_allgather_base(out, in); });
  p.wait_ = [this, work] { guarded("all-gather", [&] { work->wait(); }); };
  return p;
}

void Communicator::all_reduce_flat(at::Tensor& t) { start_all_reduce(t).wait(); }

void Communicator::reduce_scatter_sum(at::Tensor& out, at::Tensor& in) { start_reduce_scatter(out, in).wait(); }

void Communicator::all_gather_flat(at::Tensor& out, at::Tensor& in) { start_all_gather(out, in).wait(); }

void Communicator::all_reduce_sum(const std::vector<at::Tensor>& tensors) {
  if (!grouped() || tensors.empty()) return;
  guarded("all-reduce", [&] {
    // Buckets of one dtype, filled in order.
    size_t begin = 0;
    while (begin < tensors.size()) {
      size_t end = begin;
      int64_t bytes = 0;
      while (end < tensors.size() && tensors[end].scalar_type() == tensors[begin].scalar_type() &&
             (end == begin || bytes + tensors[end].nbytes() <= static_cast<size_t>(bucket_bytes_)))
        bytes += static_cast<int64_t>(tensors[end++].nbytes());
      std::vector<at::Tensor> flat;
      for (size_t i = begin; i < end; ++i) flat.push_back(tensors[i].reshape(-1));
      std::vector<at::Tensor> bucket{at::cat(flat)};
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;  // Gloo has no AVG: callers divide
      impl_->group->allreduce(bucket, options)->wait();
      int64_t offset = 0;
      for (size_t i = begin; i < end; ++i) {
        const int64_t n = tensors[i].numel();
        tensors[i].copy_(bucket[0].narrow(0, offset, n).view_as(tensors[i]));
        offset += n;
      }
      begin = end;
    }
  });
}

void Communicator::broadcast(const std::vector<at::Tensor>& tensors) {
  if (!grouped()) return;
  guarded("broadcast", [&] {
    for (const at::Tensor& t : tensors) {
      std::vector<at::Tensor> one{t};
      impl_->group->broadcast(one)->wait();
    }
  });
}

std::vector<std::string> Communicator::all_gather(const std::string& value) {
  if (!grouped()) return {value};
  std::vector<std::string> out;
  const std::string prefix = fmt::format("gqe/gather/{}/", sequence_++);
  guarded("all-gather", [&] { impl_->store->set(prefix + std::to_string(env_.rank), std::vector<uint8_t>(value.begin(), value.end())); });
  // Read after a barrier: a rank that died before writing fails the others at once there (the
  // closed connection), not at the store's timeout.
  barrier();
  guarded("all-gather", [&] {
    for (int r = 0; r < env_.world; ++r) {
      const auto bytes = impl_->store->get(prefix + std::to_string(r));
      out.emplace_back(bytes.begin(), bytes.end());
    }
  });
  return out;
}

void Communicator::publish(const std::string& key, const std::string& value) {
  if (!grouped()) return;
  guarded("publish", [&] { impl_->store->set("gqe/" + key, std::vector<uint8_t>(value.begin(), value.end())); });
}

std::string Communicator::receive(const std::string& key) {
  std::string value;
  guarded("receive", [&] {
    const auto bytes = impl_->store->get("gqe/" + key);
    value.assign(bytes.begin(), bytes.end());
  });
  return value;
}

void Communicator::check_input(const std::function<void()>& check) {
  std::string message;
  try {
    check();
  } catch (const UserError& e) {
    if (!grouped()) throw;
    message = e.what();
  }
  if (!grouped()) return;
  const std::vector<std::string> verdicts = all_gather(message.empty() ? "ok" : "error:" + message);
  // A machine other than rank 0's shows the line of the first of its ranks that found bad input
  // too: the file may be this machine's (its ranks are the local_world from rank - local_rank).
  const int first_here = env_.rank - env_.local_rank;
  if (!message.empty() && first_here != 0 &&
      std::all_of(verdicts.begin() + first_here, verdicts.begin() + env_.rank, [](const std::string& v) { return v == "ok"; })) {
    print_now(message);
  }
  for (int r = 0; r < env_.world; ++r) {
    const std::string& verdict = verdicts[static_cast<size_t>(r)];
    if (verdict == "ok") continue;
    const std::string line = r == 0 ? verdict.substr(6) : fmt::format("rank {}: {}", r, verdict.substr(6));  // another machine's file, maybe
    if (main()) {
      print_now(line);
      publish("input-reported", "1");
    } else {
      receive("input-reported");  // the line is out before this rank's exit can make a launcher stop rank 0
    }
    throw AlreadyReported(line);
  }
}

std::vector<std::string> merge_rank_lines(const std::vector<std::vector<std::string>>& per_rank) {
  std::vector<std::pair<std::string, std::vector<size_t>>> lines;  // each line with the ranks that gave it
  for (size_t r = 0; r < per_rank.size(); ++r)
    for (const std::string& line : per_rank[r]) {
      auto it = std::find_if(lines.begin(), lines.end(), [&](const auto& l) { return l.first == line; });
      if (it == lines.end()) it = lines.insert(lines.end(), {line, {}});
      if (it->second.empty() || it->second.back() != r) it->second.push_back(r);
    }
  std::vector<std::string> out;
  for (const auto& [line, ranks] : lines)
    out.push_back(ranks.size() == per_rank.size()
                      ? line
                      : fmt::format("{} {}: {}", ranks.size() == 1 ? "rank" : "ranks", fmt::join(ranks, ", "), line));
  return out;
}

std::vector<std::string> Communicator::gather_warnings(const std::vector<std::string>& mine) {
  std::vector<std::vector<std::string>> per_rank;
  for (const std::string& joined : all_gather(fmt::format("{}", fmt::join(mine, "\n")))) {
    std::vector<std::string>& lines = per_rank.emplace_back();
    std::istringstream in(joined);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  return main() ? merge_rank_lines(per_rank) : std::vector<std::string>{};
}

}  // namespace gqe
