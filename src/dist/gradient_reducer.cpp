#include "dist/gradient_reducer.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

namespace gqe {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Tells the reducer that a parameter's gradient is complete for this backward pass.
class ReadyHook : public torch::autograd::PostAccumulateGradHook {
 public:
  ReadyHook(std::function<void()> ready) : ready_(std::move(ready)) {}
  void operator()(const torch::autograd::Variable&) override { ready_(); }

 private:
  std::function<void()> ready_;
};

}  // namespace

ReducerOptions reducer_options(const DistConfig& config) {
  ReducerOptions o;
  o.bucket_bytes = config.bucket_mb << 20;
  o.shard = config.shard_optimizer;
  o.overlap = config.overlap_grad_reduce;
  o.overlap_gather = config.overlap_param_gather;
  o.reduce_dtype = config.reduce_dtype == Precision::bf16 ? at::kBFloat16 : at::kFloat;
  return o;
}

BucketLayout::BucketLayout(const std::vector<int64_t>& numels, int64_t element_bytes, int64_t bucket_bytes, int world_size)
    : bucket_of(numels.size()), world(world_size) {
  // From the last parameter back; a parameter larger than a bucket has one of its own.
  const int64_t capacity = std::max<int64_t>(1, bucket_bytes / element_bytes);
  for (size_t i = numels.size(); i-- > 0;) {
    if (buckets.empty() || (buckets.back().numel > 0 && buckets.back().numel + numels[i] > capacity)) buckets.emplace_back();
    Bucket& b = buckets.back();
    b.params.insert(b.params.begin(), i);
    b.numel += numels[i];
    bucket_of[i] = buckets.size() - 1;
  }
  // In model order inside a bucket (with one bucket, the layout a single all-reduce of all
  // gradients in model order would have).
  for (Bucket& b : buckets) {
    int64_t offset = 0;
    for (size_t i : b.params) b.offsets.push_back(offset), offset += numels[i];
    b.padded = (b.numel + world - 1) / world * world;
  }
}

int64_t BucketLayout::shard_numel() const {
  int64_t n = 0;
  for (size_t b = 0; b < buckets.size(); ++b) n += part(b);
  return n;
}

struct GradientReducer::Flight {
  bool armed = false;
  std::vector<size_t> missing;  // per bucket: parameters not ready yet
  std::vector<bool> seen;       // per parameter
  size_t next = 0;              // buckets start in order on every rank
  std::vector<Communicator::Pending> pending;
  std::vector<at::Tensor> sent, received;  // per bucket: what the collective reduces, and into
};

GradientReducer::GradientReducer(Communicator& comm, const std::vector<std::pair<std::string, at::Tensor>>& named,
                                 const ReducerOptions& options)
    : comm_(comm),
      options_(options),
      params_(named),
      layout_(
          [&] {
            std::vector<int64_t> numels;
            for (const auto& [name, p] : named) numels.push_back(p.numel());
            return numels;
          }(),
          named.empty() ? 4 : static_cast<int64_t>(named[0].second.element_size()), options.bucket_bytes, comm.world()),
      flight_(std::make_unique<Flight>()) {
  const int r = comm.rank();
  at::NoGradGuard no_grad;
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    const BucketLayout::Bucket& bucket = layout_.buckets[b];
    const at::Tensor& first = params_[bucket.params[0]].second;
    flats_.push_back(at::zeros({bucket.padded}, first.options().requires_grad(false)));
    const int64_t part = layout_.part(b), lo = r * part, hi = lo + part;
    if (options_.shard) {
      shards_.push_back(at::zeros({part}, first.options().requires_grad(false)));
      weights_.push_back(at::zeros({bucket.padded}, first.options().requires_grad(false)));
    }
    for (size_t j = 0; j < bucket.params.size(); ++j) {
      auto& [name, p] = params_[bucket.params[j]];
      if (p.scalar_type() != first.scalar_type() || !p.is_contiguous())
        throw std::logic_error(fmt::format("gradient reducer: {} is not a contiguous tensor of the first one's type", name));
      const int64_t start = bucket.offsets[j], n = p.numel();
      if (options_.shard) {  // the parameter moves into its bucket (every holder of it sees the move)
        param_of_[p.unsafeGetTensorImpl()] = bucket.params[j];
        const at::Tensor home = weights_[b].narrow(0, start, n).view(p.sizes());
        home.copy_(p.detach());
        p.set_data(home);
      }
      p.mutable_grad() = flats_[b].narrow(0, start, n).view(p.sizes());
      const size_t index = bucket.params[j];
      torch::autograd::impl::set_post_acc_grad_hooks(p, std::make_unique<ReadyHook>([this, index] { ready(index); }));
      Slice s{name, p.detach(), p.grad(), p.dim(), index, b, 0, 0};
      if (options_.shard) {
        const int64_t from = std::max(start, lo), to = std::min(start + n, hi);
        if (from >= to) continue;  // another rank's
        s.offset = from - start;
        s.shard_offset = from - lo;
        s.value = p.detach().view(-1).narrow(0, s.offset, to - from);
        s.grad = shards_[b].narrow(0, s.shard_offset, to - from);
      }
      slices_.push_back(std::move(s));
    }
  }
  // Model order, as the optimizer and the gradient norm expect.
  std::sort(slices_.begin(), slices_.end(), [](const Slice& a, const Slice& b) { return a.param < b.param; });
  gathers_.resize(weights_.size());
}

GradientReducer::~GradientReducer() {
  for (auto& [name, p] : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradientReducer::zero_grad() {
  for (at::Tensor& f : flats_) f.zero_();
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  reset(options_.overlap);
}

void GradientReducer::reset(bool armed) {
  Flight& f = *flight_;
  f.armed = armed;
  f.missing.clear();
  for (const auto& b : layout_.buckets) f.missing.push_back(b.params.size());
  f.seen.assign(params_.size(), false);
  f.next = 0;
  f.pending.assign(layout_.buckets.size(), {});
  f.sent.assign(layout_.buckets.size(), {});
  f.received.assign(layout_.buckets.size(), {});
}

void GradientReducer::ready(size_t param) {
  std::lock_guard<std::mutex> lock(mutex_);
  Flight& f = *flight_;
  if (!f.armed) return;
  if (f.seen[param])
    throw std::logic_error(fmt::format("gradient reducer: {} was accumulated twice in one backward pass", params_[param].first));
  f.seen[param] = true;
  f.missing[layout_.bucket_of[param]] -= 1;
  while (f.next < f.missing.size() && f.missing[f.next] == 0) launch(f.next++);
}

void GradientReducer::launch(size_t b) {
  Flight& f = *flight_;
  const bool cast = options_.reduce_dtype != flats_[b].scalar_type();
  f.sent[b] = cast ? flats_[b].to(options_.reduce_dtype) : flats_[b];
  if (!options_.shard) {
    f.pending[b] = comm_.start_all_reduce(f.sent[b]);
  } else {
    f.received[b] = cast ? at::empty(shards_[b].sizes(), f.sent[b].options()) : shards_[b];
    f.pending[b] = comm_.start_reduce_scatter(f.received[b], f.sent[b]);
  }
}

double GradientReducer::reduce() {
  const auto start = std::chrono::steady_clock::now();
  finish_gather();  // the update must not write slices that a gather still reads
  Flight& f = *flight_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (f.pending.size() != layout_.buckets.size()) reset(false);  // not armed: nothing started
    f.armed = false;
    // Without overlap, and buckets with a parameter that got no gradient in this pass: now.
    while (f.next < layout_.buckets.size()) launch(f.next++);
  }
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    f.pending[b].wait();
    if (f.sent[b].scalar_type() == flats_[b].scalar_type()) continue;
    if (options_.shard) shards_[b].copy_(f.received[b]);  // into fp32
    else flats_[b].copy_(f.sent[b]);
  }
  f.pending.clear();
  f.sent.clear();
  f.received.clear();
  return seconds_since(start);
}

at::Tensor GradientReducer::gather_bucket(size_t b, const std::function<at::Tensor(const Slice&)>& part) {
  at::Tensor mine = at::zeros_like(shards_[b]), all = at::empty_like(flats_[b]);
  for (const Slice& s : slices_)
    if (s.bucket == b) mine.narrow(0, s.shard_offset, s.value.numel()).copy_(part(s).reshape(-1));
  comm_.all_gather_flat(all, mine);
  return all;
}

double GradientReducer::gather_parameters() {
  if (!options_.shard) return 0;
  const auto start = std::chrono::steady_clock::now();
  finish_gather();
  // In place: this rank's part of each bucket is its updated slices.
  for (size_t b = layout_.buckets.size(); b-- > 0;) {
    at::Tensor mine = weights_[b].narrow(0, comm_.rank() * layout_.part(b), layout_.part(b));
    gathers_[b] = comm_.start_all_gather(weights_[b], mine);
  }
  ungathered_ = layout_.buckets.size();
  if (!options_.overlap_gather) finish_gather();
  return seconds_since(start);
}

double GradientReducer::wait_for(const std::vector<at::Tensor>& params) {
  if (ungathered_ == 0) return 0;
  size_t lowest = ungathered_;
  for (const at::Tensor& p : params)
    if (const auto it = param_of_.find(p.unsafeGetTensorImpl()); it != param_of_.end())
      lowest = std::min(lowest, layout_.bucket_of[it->second]);
  const auto start = std::chrono::steady_clock::now();
  while (ungathered_ > lowest) gathers_[--ungathered_].wait();
  return seconds_since(start);
}

double GradientReducer::finish_gather() {
  const auto start = std::chrono::steady_clock::now();
  while (ungathered_ > 0) gathers_[--ungathered_].wait();
  return seconds_since(start);
}

std::map<std::string, at::Tensor> GradientReducer::gather(const std::map<std::string, at::Tensor>& parts,
                                                          const std::vector<std::string>& suffixes) {
  std::map<std::string, at::Tensor> whole;
  at::NoGradGuard no_grad;
  for (const std::string& suffix : suffixes)
    for (size_t b = 0; b < layout_.buckets.size(); ++b) {
      const BucketLayout::Bucket& bucket = layout_.buckets[b];
      const at::Tensor all = gather_bucket(b, [&](const Slice& s) { return parts.at(s.name + suffix); });
      if (!comm_.main()) continue;
      for (size_t j = 0; j < bucket.params.size(); ++j) {
        const auto& [name, p] = params_[bucket.params[j]];
        whole[name + suffix] = all.narrow(0, bucket.offsets[j], p.numel()).view(p.sizes()).to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
      }
    }
  return whole;
}

void GradientReducer::scatter(const std::map<std::string, at::Tensor>& whole, const std::map<std::string, at::Tensor>& parts,
                              const std::vector<std::string>& suffixes) {
  at::NoGradGuard no_grad;
  for (const std::string& suffix : suffixes)
    for (size_t b = 0; b < layout_.buckets.size(); ++b) {
      const BucketLayout::Bucket& bucket = layout_.buckets[b];
      at::Tensor all = at::zeros_like(flats_[b]);
      if (comm_.main())
        for (size_t j = 0; j < bucket.params.size(); ++j) {
          const auto& name = params_[bucket.params[j]].first;
          all.narrow(0, bucket.offsets[j], params_[bucket.params[j]].second.numel()).copy_(whole.at(name + suffix).reshape(-1));
        }
      comm_.broadcast({all});
      const int64_t lo = comm_.rank() * layout_.part(b);
      for (const Slice& s : slices_)
        if (s.bucket == b) parts.at(s.name + suffix).view(-1).copy_(all.narrow(0, lo + s.shard_offset, s.value.numel()));
    }
}

}  // namespace gqe
