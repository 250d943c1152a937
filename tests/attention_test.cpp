// Attention layer numerics: GQA and every GQE variant against the loop reference (outputs and
// gradients), RoPE and RMSNorm against their formulas, the router and its load-balancing loss.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include <stdlib.h>

#include <cmath>
#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "model/attention.h"
#include "model/autocast.h"
#include "model/decoder.h"
#include "model/layers.h"
#include "model/layers_kernels.h"
#include "model/router.h"
#include "model_util.h"
#include "reference.h"

namespace gqe {
namespace {

using test::randomize;
using test::small_config;

void expect_close(const at::Tensor& actual, const at::Tensor& expected, const std::string& what, double tol = 1e-5) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double err = (actual - expected).abs().max().item<double>();
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  EXPECT_LE(err, tol * scale) << what << ": max abs difference " << err;
}

struct Case {
  AttentionType type;
  GqeVariant variant;
  int64_t n_heads, n_kv_heads, top_k;
};

std::string name_of(const Case& c) {
  if (c.type == AttentionType::gqa) return "gqa_N" + std::to_string(c.n_heads) + "_G" + std::to_string(c.n_kv_heads);
  return std::string(enum_name(c.variant)) + "_N" + std::to_string(c.n_heads) + "_G" + std::to_string(c.n_kv_heads) +
         "_k" + std::to_string(c.top_k);
}
std::string case_name(const testing::TestParamInfo<Case>& info) { return name_of(info.param); }
void PrintTo(const Case& c, std::ostream* os) { *os << name_of(c); }

class AttentionParity : public testing::TestWithParam<Case> {};

TEST_P(AttentionParity, OutputsAndGradientsMatchTheLoopReference) {
  const Case& p = GetParam();
  torch::manual_seed(11);
  const ModelConfig c = small_config(p.type, p.variant, p.n_heads, p.n_kv_heads, p.top_k);
  Attention attn(c);
  randomize(*attn);
  const int64_t T = 7;
  const at::Tensor x = at::randn({2, T, c.d_model}).requires_grad_();
  const RotaryTables rope = rotary_tables(0, T, c.head_dim, c.rope_theta, at::kCPU);

  const at::Tensor y = attn->forward(x, rope).y;
  const at::Tensor y_ref = test::ref_attention(*attn, c, x);
  expect_close(y, y_ref, "output");

  // The reference really routes: with k < M some tokens of a group pick different experts.
  if (p.type == AttentionType::gqe && p.top_k < p.n_heads / p.n_kv_heads) {
    const Routing r = route(at::linear(x, attn->router->weight), c.n_kv_heads, c.attention.top_k);
    const at::Tensor first = r.topi.select(-1, 0).flatten(0, 1);  // [tokens, G]
    EXPECT_TRUE(first.amax(0).ne(first.amin(0)).all().item<bool>()) << "a group routed every token alike";
  }

  const at::Tensor probe = at::randn_like(y);
  std::vector<at::Tensor> inputs{x};
  std::vector<std::string> names{"x"};
  for (const auto& named : attn->named_parameters()) inputs.push_back(named.value()), names.push_back(named.key());
  const auto grads = torch::autograd::grad({(y * probe).sum()}, inputs, {}, true, false, /*allow_unused=*/true);
  const auto grads_ref = torch::autograd::grad({(y_ref * probe).sum()}, inputs, {}, true, false, true);
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_EQ(grads[i].defined(), grads_ref[i].defined()) << names[i];
    if (grads[i].defined()) expect_close(grads[i], grads_ref[i], "gradient of " + names[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllKinds, AttentionParity,
    testing::Values(Case{AttentionType::gqa, GqeVariant::gqe, 4, 2, 1}, Case{AttentionType::gqa, GqeVariant::gqe, 6, 3, 1},
                    Case{AttentionType::gqa, GqeVariant::gqe, 4, 4, 1},  // MHA
                    Case{AttentionType::gqe, GqeVariant::gqe, 4, 2, 1},  // the paper's layout in miniature
                    Case{AttentionType::gqe, GqeVariant::gqe, 8, 2, 2},
                    Case{AttentionType::gqe, GqeVariant::gqe, 8, 2, 4},
                    Case{AttentionType::gqe, GqeVariant::hard_concat, 4, 2, 1},
                    Case{AttentionType::gqe, GqeVariant::hard_concat, 8, 2, 3},
                    Case{AttentionType::gqe, GqeVariant::weighted_concat, 4, 2, 1},
                    Case{AttentionType::gqe, GqeVariant::weighted_concat, 6, 2, 2}),
    case_name);

TEST(Attention, TopKEqualToMHoldsEveryHeadsDenseOutput) {
  // hard_concat with k = M and o_proj = identity: the output is the hard slots themselves, which
  // must be the dense per-head attention outputs, ordered within each group by router probability.
  torch::manual_seed(3);
  ModelConfig c = small_config(AttentionType::gqe, GqeVariant::hard_concat, 6, 2, 3);
  c.d_model = c.n_heads * c.head_dim;
  Attention attn(c);
  randomize(*attn);
  {
    torch::NoGradGuard no_grad;
    attn->o_proj->weight.copy_(at::eye(c.d_model));
  }
  const int64_t B = 2, T = 9, G = c.n_kv_heads, M = 3, dh = c.head_dim;
  const at::Tensor x = at::randn({B, T, c.d_model});
  const RotaryTables rope = rotary_tables(0, T, dh, c.rope_theta, at::kCPU);
  const at::Tensor slots = attn->forward(x, rope).y.view({B, T, G, M, dh});

  const at::Tensor q = apply_rotary(attn->q_proj(x).view({B, T, c.n_heads, dh}).transpose(1, 2), rope);
  const at::Tensor k = apply_rotary(attn->k_proj(x).view({B, T, G, dh}).transpose(1, 2), rope);
  const at::Tensor v = attn->v_proj(x).view({B, T, G, dh}).transpose(1, 2);
  const at::Tensor dense =  // plain dense attention, K/V repeated explicitly: [B, T, N, dh]
      at::scaled_dot_product_attention(q, k.repeat_interleave(M, 1), v.repeat_interleave(M, 1), {}, 0.0, true)
          .transpose(1, 2);
  const at::Tensor topi = route(attn->router(x), G, M).topi;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t r = 0; r < M; ++r)
          expect_close(slots[b][t][g][r], dense[b][t][g * M + topi[b][t][g][r].item<int64_t>()], "slot");
  // Every expert appears exactly once per group.
  EXPECT_TRUE(std::get<0>(topi.sort(-1)).equal(at::arange(M).expand_as(topi)));
}

// The ATen ops that `run` calls, with their inputs' dtypes and shapes, as the profiler records them.
struct RecordedOp {
  std::string name;
  std::vector<std::string> dtypes;
  std::vector<std::vector<int64_t>> shapes;
};

std::vector<RecordedOp> recorded_ops(const std::function<void()>& run) {
  namespace profiler = torch::autograd::profiler;
  setenv("KINETO_LOG_LEVEL", "5", 0);
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO, /*report_input_shapes=*/true);
  const std::set<torch::profiler::impl::ActivityType> cpu{torch::profiler::impl::ActivityType::CPU};
  profiler::prepareProfiler(config, cpu);
  profiler::enableProfiler(config, cpu);
  run();
  std::vector<RecordedOp> ops;
  const std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
  for (const profiler::KinetoEvent& e : result->events()) ops.push_back({e.name(), e.dtypes().vec(), e.shapes().vec()});
  return ops;
}

// The query heads of each attention call of one forward: {q heads, kv heads} per call.
std::vector<std::pair<int64_t, int64_t>> attention_calls(const ModelConfig& c) {
  Attention attn(c);
  randomize(*attn);
  const at::Tensor x = at::randn({2, 7, c.d_model});
  const RotaryTables rope = rotary_tables(0, 7, c.head_dim, c.rope_theta, at::kCPU);
  std::vector<std::pair<int64_t, int64_t>> calls;
  for (const RecordedOp& op : recorded_ops([&] { attn->forward(x, rope); }))
    if (op.name == "aten::scaled_dot_product_attention") calls.emplace_back(op.shapes[0][1], op.shapes[1][1]);
  return calls;
}

// What GQE is for: with top-k of M experts only G*k routed query heads (and the shared one, with
// the groups' mean K/V) attend; the unselected heads are never computed, not computed and masked.
TEST(Attention, GqeAttendsWithTheSelectedHeadsOnly) {
  using Calls = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(attention_calls(small_config(AttentionType::gqa, GqeVariant::gqe, 8, 2)), (Calls{{8, 2}}));
  EXPECT_EQ(attention_calls(small_config(AttentionType::gqe, GqeVariant::gqe, 8, 2, 1)), (Calls{{2, 2}, {1, 1}}));
  EXPECT_EQ(attention_calls(small_config(AttentionType::gqe, GqeVariant::gqe, 8, 2, 3)), (Calls{{6, 2}, {1, 1}}));
  EXPECT_EQ(attention_calls(small_config(AttentionType::gqe, GqeVariant::hard_concat, 8, 2, 1)), (Calls{{2, 2}}));
}

TEST(Attention, RouterGetsLmGradientExceptInHardConcat) {
  const int64_t T = 8;
  for (GqeVariant variant : {GqeVariant::gqe, GqeVariant::weighted_concat, GqeVariant::hard_concat}) {
    SCOPED_TRACE(enum_name(variant));
    torch::manual_seed(5);
    ModelConfig c = small_config(AttentionType::gqe, variant);
    c.attention.router_init = RouterInit::zeros;  // the default, as in training
    Decoder model(c);
    ASSERT_TRUE(model->model->layers[0]->as<DecoderLayer>()->self_attn->router->weight.eq(0).all().item<bool>());
    const at::Tensor tokens = at::randint(c.vocab_size, {2, T});
    const auto out = model->forward(tokens);
    const at::Tensor lm_loss =
        at::cross_entropy_loss(out.logits.view({-1, c.vocab_size}), at::randint(c.vocab_size, {2 * T}));
    std::vector<at::Tensor> routers;
    for (const auto& layer : *model->model->layers) routers.push_back(layer->as<DecoderLayer>()->self_attn->router->weight);
    const auto grads = torch::autograd::grad({lm_loss}, routers, {}, true, false, /*allow_unused=*/true);
    for (const auto& g : grads) {
      const double norm = g.defined() ? g.norm().item<double>() : 0.0;
      if (variant == GqeVariant::hard_concat) EXPECT_EQ(norm, 0.0);
      else EXPECT_GT(norm, 1e-8);
    }
    // The load-balancing loss reaches every router, whatever the variant.
    for (const auto& g : torch::autograd::grad({out.aux_loss}, routers, {}, false, false, true))
      EXPECT_GT(g.norm().item<double>(), 1e-8);
  }
}

TEST(Attention, RouterRunsInFp32UnderBf16Autocast) {
  torch::manual_seed(13);
  const ModelConfig c = small_config(AttentionType::gqe, GqeVariant::gqe, 8, 2, 2);
  Attention attn(c);
  randomize(*attn);
  const at::Tensor x = at::randn({2, 16, c.d_model});
  const RotaryTables rope = rotary_tables(0, 16, c.head_dim, c.rope_theta, at::kCPU);
  const AttentionOutput fp32 = attn->forward(x, rope);

  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  const AttentionOutput mixed = attn->forward(x, rope);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();

  EXPECT_EQ(mixed.y.scalar_type(), at::kBFloat16);  // autocast was really on
  EXPECT_TRUE(mixed.load.equal(fp32.load));
  EXPECT_NEAR(mixed.entropy.item<double>(), fp32.entropy.item<double>(), 1e-6);
  EXPECT_NEAR(mixed.aux.item<double>(), fp32.aux.item<double>(), 1e-6);
  EXPECT_LE((mixed.y.to(at::kFloat) - fp32.y).abs().max().item<double>(), 0.05);  // bf16-level agreement
}

// Under autocast the norms write the projections' bf16 inputs themselves (add_and_norm), and for
// GQE's router an fp32 copy in the same pass: no normed activation is cast, and the residual adds
// happen in the same kernels. (Autocast alone casts
// once per projection, five per layer, and their gradients come back as five fp32 casts and four
// fp32 adds.)
TEST(Decoder, UnderAutocastTheNormsWriteTheMatmulsBf16Inputs) {
  for (AttentionType type : {AttentionType::gqa, AttentionType::gqe}) {
    SCOPED_TRACE(enum_name(type));
    const ModelConfig c = small_config(type);
    Decoder model = test::random_decoder(c, 14);
    const at::Tensor tokens = at::randint(c.vocab_size, {2, 7});
    const at::Tensor fp32 = model->forward(tokens).logits;
    at::Tensor mixed;
    const auto ops = recorded_ops([&] {
      AutocastScope autocast(at::kCPU, true);
      mixed = model->forward(tokens).logits;
    });
    int64_t casts = 0, adds = 0;  // casts from fp32; adds to the residual stream
    for (const RecordedOp& op : ops) {
      const bool activation = !op.shapes.empty() && op.shapes.at(0) == std::vector<int64_t>{2, 7, c.d_model};
      casts += activation && op.name == "aten::_to_copy" && op.dtypes.at(0) == "float";
      adds += activation && op.name == "aten::add";
    }
    EXPECT_EQ(casts, 0);
    EXPECT_EQ(adds, 0) << "every residual add is fused with the RMSNorm after it";
    EXPECT_EQ(mixed.scalar_type(), at::kBFloat16);
    EXPECT_LE((mixed.to(at::kFloat) - fp32).abs().max().item<double>(), 0.05 * std::max(1.0, fp32.abs().max().item<double>()));
    // The gradients still reach the embedding through the bf16 casts, at bf16 precision.
    const at::Tensor w = model->model->embed_tokens->weight;
    const at::Tensor g32 = torch::autograd::grad({fp32.square().mean()}, {w})[0];
    const at::Tensor g16 = torch::autograd::grad({mixed.to(at::kFloat).square().mean()}, {w})[0];
    EXPECT_LE((g16 - g32).abs().max().item<double>(), 0.05 * g32.abs().max().item<double>());
  }
}

TEST(Router, LoadBalancingLossIsOneForBalancedUniformRouting) {
  // 4 tokens, 2 groups, 2 experts, top-1: tokens alternate between the experts, probabilities uniform.
  Routing r;
  r.probs = at::full({1, 4, 2, 2}, 0.5);
  r.topi = at::tensor({0, 1, 1, 0, 0, 1, 1, 0}, at::kLong).view({1, 4, 2, 1});
  r.topv = at::full({1, 4, 2, 1}, 0.5);
  EXPECT_DOUBLE_EQ(load_balancing_loss(r, expert_load(r)).item<double>(), 1.0);
  EXPECT_TRUE(expert_load(r).equal(at::full({2, 2}, 0.5)));
}

TEST(Router, LoadBalancingLossExceedsOneWhenEveryTokenPicksTheSameExpert) {
  const at::Tensor logits = at::tensor({2.0f, -2.0f}).repeat({1, 6, 3, 1}).view({1, 6, 6});  // 3 groups of 2
  const Routing r = route(logits, 3, 1);
  EXPECT_TRUE(r.topi.eq(0).all().item<bool>());
  const double p0 = 1.0 / (1.0 + std::exp(-4.0));
  EXPECT_NEAR(load_balancing_loss(r, expert_load(r)).item<double>(), 2.0 * p0, 1e-6);  // M * f0 * P0 = 2 * 1 * p0 > 1
  EXPECT_GT(load_balancing_loss(r, expert_load(r)).item<double>(), 1.5);
}

TEST(Router, GradientFlowsThroughMeanProbabilityOnly) {
  torch::manual_seed(2);
  const int64_t G = 2, M = 4, K = 2, tokens = 10;
  const at::Tensor logits = at::randn({1, tokens, G * M}).requires_grad_();
  const Routing r = route(logits, G, K);
  EXPECT_FALSE(expert_load(r).requires_grad());
  const at::Tensor f = expert_load(r);
  EXPECT_TRUE(f.sum(-1).allclose(at::full({G}, static_cast<double>(K))));  // each token picks K experts
  // d aux / d probs[t, g, m] = M * f[g, m] / (G * tokens), then through the softmax.
  const auto grad = torch::autograd::grad({load_balancing_loss(r, expert_load(r))}, {logits})[0];
  const at::Tensor dprobs = (M * f / static_cast<double>(G * tokens)).expand({1, tokens, G, M});
  const at::Tensor p = r.probs.detach();
  const at::Tensor expected = p * (dprobs - (dprobs * p).sum(-1, true));
  expect_close(grad.view({1, tokens, G, M}), expected, "aux gradient", 1e-6);
}

TEST(Router, ExpertLoadCountsEveryPickOfEveryToken) {
  // 3 tokens, 2 groups of 4 experts, top-2: group 0 picks {0,1}, {0,2}, {3,0}; group 1 {1,2} each time.
  const at::Tensor topi = at::tensor({0, 1, 1, 2, 0, 2, 1, 2, 3, 0, 1, 2}, at::kLong).view({1, 3, 2, 2});
  const Routing r{at::full({1, 3, 2, 4}, 0.25), at::full({1, 3, 2, 2}, 0.25), topi};
  const at::Tensor expected = at::tensor({3.0f, 1.0f, 1.0f, 1.0f, 0.0f, 3.0f, 3.0f, 0.0f}).view({2, 4}) / 3.0;
  EXPECT_TRUE(expert_load(r).equal(expected)) << expert_load(r);
}

TEST(Router, TopKIsSortedAndEntropyIsMaximalWhenUniform) {
  const Routing r = route(at::zeros({2, 3, 8}), 2, 2);
  EXPECT_NEAR(router_entropy(r).item<double>(), std::log(4.0), 1e-6);
  const Routing s = route(at::randn({2, 3, 8}), 2, 3);
  EXPECT_TRUE((s.topv.select(-1, 0) >= s.topv.select(-1, 1)).all().item<bool>());
  EXPECT_TRUE(s.topv.equal(s.probs.gather(-1, s.topi)));
}

TEST(Rope, MatchesTheRotateHalfFormulaAtAnyOffset) {
  torch::manual_seed(1);
  const int64_t dh = 16, start = 5, T = 7;
  const at::Tensor x = at::randn({3, T, dh});
  const at::Tensor y = apply_rotary(x, rotary_tables(start, T, dh, 500.0, at::kCPU));
  for (int64_t t = 0; t < T; ++t) expect_close(y.select(1, t), test::ref_rope(x.select(1, t), start + t, 500.0), "rope", 1e-6);
  // By hand, dh = 4, position 1, theta 10000: inv_freq = [1, 0.01].
  const at::Tensor h = apply_rotary(at::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({1, 4}), rotary_tables(1, 1, 4, 1e4, at::kCPU));
  EXPECT_NEAR(h[0][0].item<double>(), 1 * std::cos(1.0) - 3 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(h[0][1].item<double>(), 2 * std::cos(0.01) - 4 * std::sin(0.01), 1e-6);
  EXPECT_NEAR(h[0][2].item<double>(), 3 * std::cos(1.0) + 1 * std::sin(1.0), 1e-6);
  EXPECT_NEAR(h[0][3].item<double>(), 4 * std::cos(0.01) + 2 * std::sin(0.01), 1e-6);
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  torch::manual_seed(4);
  const at::Tensor q = at::randn({64}), k = at::randn({64});
  auto score = [&](int64_t m, int64_t n) {
    const RotaryTables tq = rotary_tables(m, 1, 64, 1e4, at::kCPU), tk = rotary_tables(n, 1, 64, 1e4, at::kCPU);
    return apply_rotary(q.view({1, 64}), tq).view({64}).dot(apply_rotary(k.view({1, 64}), tk).view({64})).item<double>();
  };
  EXPECT_NEAR(score(3, 1), score(103, 101), 1e-4);
  EXPECT_GT(std::abs(score(3, 1) - score(1, 3)), 1e-3);
}

// The fused kernels' bodies (layers_kernels.h), run on the CPU one index at a time, against the
// ATen path: their arithmetic and indexing are checked here, without a GPU. Each runs as the GPU
// runs it, with V elements per index (vector loads) where the tensors are aligned, and one where
// they are not; the launchers below record which body ran.
struct RecordingLaunch {
  bool wide = true;
  std::shared_ptr<int> width = std::make_shared<int>(0);  // the last body's elements per index

  template <class F>
  void operator()(const F& f, int64_t n) const {
    *width = F::width;
    kernels::HostLaunch{}(f, n);
  }
};
struct RecordingRows {
  int64_t lanes = 1;
  bool wide = true;
  std::shared_ptr<int> width = std::make_shared<int>(0);

  template <class F>
  at::Tensor operator()(const F& f, int64_t rows, int64_t d, bool accumulate) const {
    *width = F::width;
    return kernels::HostRows{lanes}(f, rows, d, accumulate);
  }
};

// t's values in a tensor of the same layout whose data starts one element past an aligned address,
// so that no vector load fits it.
at::Tensor misaligned(const at::Tensor& t) {
  at::Tensor base = at::empty({t.numel() + 1}, t.options()).narrow(0, 1, t.numel()).view(t.sizes());
  return base.copy_(t);
}

TEST(Rope, FusedKernelBodyMatchesTheAtenPathBothWaysAtEitherWidth) {
  torch::manual_seed(12);
  const int64_t B = 2, H = 3, T = 5, dh = 16;
  const RotaryTables tables = rotary_tables(4, T, dh, 1e4, at::kCPU);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (bool aligned : {true, false}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + (aligned ? " aligned" : " misaligned"));
      const double tol = dtype == at::kFloat ? 1e-6 : 1e-2;
      const int wide = dtype == at::kFloat ? 4 : 8;
      const at::Tensor x0 = at::randn({B, T, H, dh}).to(dtype);
      const at::Tensor x = (aligned ? x0 : misaligned(x0)).transpose(1, 2).requires_grad_();
      const at::Tensor y = apply_rotary(x, tables);
      const RecordingLaunch launch;
      const at::Tensor fused = kernels::rotary(x.detach(), tables.cos, tables.signed_sin, 1, launch);
      EXPECT_EQ(*launch.width, aligned ? wide : 1);
      EXPECT_EQ(fused.strides(), x.strides()) << "the output keeps the input's layout";
      expect_close(fused.to(at::kFloat), y.detach().to(at::kFloat), "rotation", tol);
      EXPECT_TRUE(fused.equal(kernels::rotary(x.detach(), tables.cos, tables.signed_sin, 1, kernels::HostLaunch{})))
          << "the same numbers at either width";
      // The adjoint, on a gradient whose last dim is strided (copied to contiguous first).
      const at::Tensor g = at::randn({B, H, dh, T}).to(dtype).transpose(2, 3);
      const at::Tensor dx = torch::autograd::grad({y}, {x}, {g})[0];
      const at::Tensor fused_dx = kernels::rotary(g, tables.cos, tables.signed_sin, -1, launch);
      expect_close(fused_dx.to(at::kFloat), dx.to(at::kFloat), "adjoint", tol);
    }
  // A row stride that is no multiple of the width (heads of 12 columns: 6 pairs) takes one pair per index.
  const at::Tensor x = at::randn({1, 2, T, 12});
  const RotaryTables t12 = rotary_tables(4, T, 12, 1e4, at::kCPU);
  const RecordingLaunch launch;
  expect_close(kernels::rotary(x, t12.cos, t12.signed_sin, 1, launch), apply_rotary(x, t12), "12 columns", 1e-6);
  EXPECT_EQ(*launch.width, 1);
  EXPECT_THROW(kernels::rotary(at::randn({2, 5, 8}), tables.cos, tables.signed_sin, 1, kernels::HostLaunch{}), c10::Error);
  EXPECT_THROW(kernels::rotary(at::randn({1, 1, 4, 8}), tables.cos, tables.signed_sin, 1, kernels::HostLaunch{}), c10::Error);
}

TEST(SwiGLU, FusedKernelBodiesMatchTheAtenPathAtEitherWidth) {
  torch::manual_seed(13);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (bool aligned : {true, false}) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + (aligned ? " aligned" : " misaligned"));
      const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
      const int wide = dtype == at::kFloat ? 4 : 8;
      auto input = [&](const at::Tensor& t) { return (aligned ? t : misaligned(t)).requires_grad_(); };
      const at::Tensor gate = input((at::randn({3, 7, 40}) * 3).to(dtype)), up = input(at::randn({3, 7, 40}).to(dtype));
      const at::Tensor dy = at::randn({3, 7, 40}).to(dtype);
      const at::Tensor y = at::silu(gate) * up;
      const auto d = torch::autograd::grad({y}, {gate, up}, {dy});
      const RecordingLaunch launch;
      const at::Tensor fused = kernels::swiglu(gate.detach(), up.detach(), launch);
      EXPECT_EQ(*launch.width, aligned ? wide : 1);
      expect_close(fused.to(at::kFloat), y.detach().to(at::kFloat), "forward", tol);
      EXPECT_TRUE(fused.equal(kernels::swiglu(gate.detach(), up.detach(), kernels::HostLaunch{})));
      const auto [dgate, dup] = kernels::swiglu_backward(dy, gate.detach(), up.detach(), launch);
      EXPECT_EQ(*launch.width, aligned ? wide : 1);
      expect_close(dgate.to(at::kFloat), d[0].to(at::kFloat), "d gate", tol);
      expect_close(dup.to(at::kFloat), d[1].to(at::kFloat), "d up", tol);
      const auto [dgate1, dup1] = kernels::swiglu_backward(dy, gate.detach(), up.detach(), kernels::HostLaunch{});
      EXPECT_TRUE(dgate.equal(dgate1) && dup.equal(dup1));
    }
  // A length that is no multiple of the width.
  const at::Tensor gate = at::randn({3, 5}), up = at::randn({3, 5});
  const RecordingLaunch launch;
  expect_close(kernels::swiglu(gate, up, launch), at::silu(gate) * up, "15 elements", 1e-6);
  EXPECT_EQ(*launch.width, 1);
}

// The GQE variant's o_proj input as ATen computes it: routed slots, weighted sum, shared slot.
at::Tensor gqe_slots_by_aten(const at::Tensor& o, const at::Tensor& shared, const at::Tensor& w) {
  const at::Tensor routed = o.transpose(1, 2);  // [B, T, S, dh]
  const at::Tensor weighted = (routed * w.unsqueeze(-1)).sum(2, /*keepdim=*/true).to(o.scalar_type());
  return at::cat({routed, weighted, shared.transpose(1, 2)}, 2).flatten(2);
}

TEST(GqeSlots, FusedKernelBodiesMatchTheAtenPathInSdpaLayoutsAtEitherWidth) {
  torch::manual_seed(18);
  const int64_t B = 2, S = 3, T = 5, dh = 8;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (bool token_major : {true, false})  // o stored [B, T, S, dh] (as SDPA writes it) or [B, S, T, dh]
      for (bool aligned : {true, false}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + (token_major ? " token-major" : " head-major") +
                     (aligned ? "" : ", misaligned"));
        const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
        const int wide = dtype == at::kFloat ? 4 : 8;
        const at::Tensor o0 = (token_major ? at::randn({B, T, S, dh}).transpose(1, 2) : at::randn({B, S, T, dh})).to(dtype);
        const at::Tensor o = (aligned ? o0 : misaligned(o0.contiguous())).requires_grad_();
        const at::Tensor shared = at::randn({B, T, 1, dh}).to(dtype).transpose(1, 2).requires_grad_();
        const at::Tensor w = at::rand({B, T, S}).requires_grad_();
        const at::Tensor y = gqe_slots_by_aten(o, shared, w);
        const RecordingLaunch launch;
        const at::Tensor fused = kernels::gqe_slots(o.detach(), shared.detach(), w.detach(), launch);
        EXPECT_EQ(*launch.width, aligned ? wide : 1);
        expect_close(fused.to(at::kFloat), y.detach().to(at::kFloat), "slots", tol);
        EXPECT_TRUE(fused.equal(kernels::gqe_slots(o.detach(), shared.detach(), w.detach(), kernels::HostLaunch{})));
        const at::Tensor dy = at::randn(y.sizes()).to(dtype);
        const auto want = torch::autograd::grad({y}, {o, shared, w}, {dy});
        const kernels::GqeSlotsGrad got = kernels::gqe_slots_backward(dy, o.detach(), w.detach(), launch);
        EXPECT_EQ(*launch.width, aligned ? wide : 1);
        EXPECT_EQ(got.o.strides(), o.strides()) << "d o in o's layout, as SDPA's backward reads it";
        expect_close(got.o.to(at::kFloat), want[0].to(at::kFloat), "d o", tol);
        expect_close(got.shared.to(at::kFloat), want[1].to(at::kFloat), "d shared", tol);
        expect_close(got.w, want[2], "d w", tol);
        const kernels::GqeSlotsGrad narrow = kernels::gqe_slots_backward(dy, o.detach(), w.detach(), kernels::HostLaunch{});
        EXPECT_TRUE(got.o.equal(narrow.o) && got.w.equal(narrow.w)) << "the same numbers at either width";
      }
  EXPECT_THROW(kernels::gqe_slots(at::randn({B, S, T, dh}), at::randn({B, 2, T, dh}), at::rand({B, T, S}), kernels::HostLaunch{}),
               c10::Error);  // one shared head
  EXPECT_THROW(kernels::gqe_slots(at::randn({B, S, T, dh}), at::randn({B, 1, T, dh}), at::rand({B, T, S + 1}),
                                  kernels::HostLaunch{}),
               c10::Error);
}

// GQE's query gather and RoPE in one body, against the ATen path it replaces on a GPU
// (index_select, RoPE, split), forward and backward; with a shared slot and without.
TEST(GqeQueries, FusedKernelBodiesMatchTheAtenPathAtEitherWidth) {
  torch::manual_seed(19);
  const int64_t B = 2, T = 5, H = 5, D = 16;
  const RotaryTables tables = rotary_tables(2, T, D, 1e4, at::kCPU);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16})
    for (bool aligned : {true, false})
      for (int64_t shared : {1, 0}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + (aligned ? " aligned" : " misaligned") +
                     (shared ? " with a shared slot" : " routed only"));
        const int64_t routed = 3, S = routed + shared;
        const double tol = dtype == at::kFloat ? 1e-6 : 1e-2;
        const int wide = dtype == at::kFloat ? 4 : 8;
        const at::Tensor rows0 = at::randn({B * T * H, D}).to(dtype);
        const at::Tensor rows = (aligned ? rows0 : misaligned(rows0)).requires_grad_();
        std::vector<at::Tensor> picks;  // S distinct rows of each token's H
        for (int64_t n = 0; n < B * T; ++n) picks.push_back(at::randperm(H).narrow(0, 0, S) + n * H);
        const at::Tensor index = at::stack(picks).view(-1);
        const at::Tensor y = apply_rotary(rows.index_select(0, index).view({B, T, S, D}).transpose(1, 2), tables);
        const RecordingLaunch launch;
        const kernels::GqeQueries got =
            kernels::gqe_queries(rows.detach(), index, tables.cos, tables.signed_sin, B, T, routed, launch);
        EXPECT_EQ(*launch.width, aligned ? wide : 1);
        EXPECT_EQ(got.routed.sizes(), (std::vector<int64_t>{B, routed, T, D}));
        EXPECT_EQ(got.routed.stride(2), routed * D) << "token-major, as attention reads queries";
        expect_close(got.routed.to(at::kFloat), y.narrow(1, 0, routed).detach().to(at::kFloat), "routed", tol);
        ASSERT_EQ(got.shared.defined(), shared > 0);
        if (shared) expect_close(got.shared.to(at::kFloat), y.narrow(1, routed, 1).detach().to(at::kFloat), "shared", tol);
        // Backward, the gradients in two layouts attention's backward may give: token-major, head-major.
        const at::Tensor g_routed = at::randn({B, T, routed, D}).to(dtype).transpose(1, 2);
        const at::Tensor g_shared = shared ? at::randn({B, 1, T, D}).to(dtype) : at::Tensor();
        const at::Tensor want =
            torch::autograd::grad({y}, {rows}, {shared ? at::cat({g_routed, g_shared}, 1) : g_routed})[0];
        const at::Tensor d_rows =
            kernels::gqe_queries_backward(g_routed, g_shared, index, tables.cos, tables.signed_sin, B * T * H, launch);
        EXPECT_EQ(*launch.width, wide);
        expect_close(d_rows.to(at::kFloat), want.to(at::kFloat), "d rows (zeros where no slot reads)", tol);
        EXPECT_TRUE(d_rows.equal(
            kernels::gqe_queries_backward(g_routed, g_shared, index, tables.cos, tables.signed_sin, B * T * H, kernels::HostLaunch{})))
            << "the same numbers at either width";
      }
}

// The unfused computation add_and_norm replaces: (x + delta, RMSNorm(x + delta) cast to out).
std::pair<at::Tensor, at::Tensor> add_and_norm_by_aten(const at::Tensor& x, const at::Tensor& delta, const at::Tensor& w,
                                                       at::ScalarType out) {
  const at::Tensor sum = delta.defined() ? x + delta : x;
  return {sum, at::rms_norm(sum, {sum.size(-1)}, w, 1e-5).to(out)};
}

TEST(RMSNorm, FusedAddAndNormBodiesMatchTheAtenPathOnAnyNumberOfLanesAtEitherWidth) {
  torch::manual_seed(15);
  const int64_t d = 40;
  const at::Tensor w = at::rand({d}) + 0.5;
  for (at::ScalarType out : {at::kFloat, at::kBFloat16})
    for (bool with_delta : {true, false})
      for (int64_t lanes : {1, 3, 64})  // 64 lanes for 40 columns: some lanes have none
        for (bool wide : {false, true}) {
          const bool fp32_copy = lanes != 3;
          // The widest case once more with x one element off an aligned address: it takes V = 1.
          const bool aligned = !(wide && lanes == 64 && with_delta);
          SCOPED_TRACE(std::string(c10::toString(out)) + (with_delta ? " with delta, lanes " : " no delta, lanes ") +
                       std::to_string(lanes) + (fp32_copy ? ", fp32 copy" : "") + (wide ? ", wide" : "") +
                       (aligned ? "" : ", misaligned"));
          const double tol = out == at::kFloat ? 1e-5 : 1e-2;
          const at::Tensor x0 = at::randn({3, 5, d}) * 2;
          const at::Tensor x = (aligned ? x0 : misaligned(x0)).requires_grad_(), wg = w.clone().requires_grad_();
          const at::Tensor delta = with_delta ? at::randn({3, 5, d}).to(out).requires_grad_() : at::Tensor();
          const auto [sum, normed] = add_and_norm_by_aten(x, delta, wg, out);
          const RecordingRows launch{lanes, wide};
          const kernels::ResidualNorm r = kernels::residual_rms_norm(x.detach(), with_delta ? delta.detach() : delta, w,
                                                                     1e-5, out, fp32_copy, launch);
          EXPECT_EQ(*launch.width, wide && aligned ? 4 : 1);
          EXPECT_EQ(r.normed.scalar_type(), out);
          expect_close(r.normed.to(at::kFloat), normed.detach().to(at::kFloat), "normed", tol);
          const at::Tensor normed32 = at::rms_norm(sum, {d}, wg, 1e-5);
          if (fp32_copy) expect_close(r.normed_fp32, normed32.detach(), "fp32 copy");
          if (with_delta) expect_close(r.sum, sum.detach(), "sum");
          expect_close(r.rstd, at::rsqrt(sum.detach().square().mean(-1) + 1e-5), "rstd");
          // Backward, with a gradient reaching the sum directly too (the residual stream's) and one
          // reaching the fp32 copy.
          const at::Tensor dy = at::randn({3, 5, d}).to(out), dsum = at::randn({3, 5, d}), dy32 = at::randn({3, 5, d});
          std::vector<at::Tensor> inputs{x, wg};
          if (with_delta) inputs.push_back(delta);
          const auto expected = torch::autograd::grad(
              {normed, sum, normed32}, inputs,
              {dy, with_delta ? dsum : at::zeros_like(dsum), fp32_copy ? dy32 : at::zeros_like(dy32)});
          const kernels::ResidualNormGrad g = kernels::residual_rms_norm_backward(
              dy, fp32_copy ? dy32 : at::Tensor(), with_delta ? dsum : at::Tensor(), with_delta ? r.sum : x.detach(), w, r.rstd,
              with_delta, launch);
          EXPECT_EQ(*launch.width, wide ? 4 : 1) << "h is the forward's own sum or x, aligned";
          expect_close(g.x, expected[0], "d x", tol);
          expect_close(g.weight, expected[1], "d weight", tol);
          if (with_delta) {
            EXPECT_EQ(g.delta.scalar_type(), out);
            expect_close(g.delta.to(at::kFloat), expected[2].to(at::kFloat), "d delta", tol);
          }
        }
  EXPECT_THROW(kernels::residual_rms_norm(at::randn({2, d}).to(at::kBFloat16), at::Tensor(), w, 1e-5, at::kFloat, false,
                                          kernels::HostRows{}),
               c10::Error);  // the residual stream must be fp32
  EXPECT_THROW(kernels::residual_rms_norm(at::randn({2, d + 1}), at::Tensor(), w, 1e-5, at::kFloat, false, kernels::HostRows{}),
               c10::Error);
  EXPECT_THROW(
      kernels::residual_rms_norm(at::randn({2, d}), at::randn({2, d}), w, 1e-5, at::kBFloat16, false, kernels::HostRows{}),
      c10::Error);  // delta in the output's dtype
}

// add_and_norm as the decoder uses it: gradients through both outputs to x, delta and the weight,
// in fp32 and under autocast (bf16 normed output and delta).
TEST(RMSNorm, AddAndNormGradientsMatchTheUnfusedComputation) {
  torch::manual_seed(16);
  RMSNorm norm(24, 1e-5);
  randomize(*norm);
  for (bool autocast : {false, true}) {
    SCOPED_TRACE(autocast ? "autocast" : "fp32");
    const at::ScalarType out = autocast ? at::kBFloat16 : at::kFloat;
    const double tol = autocast ? 2e-2 : 1e-5;
    const at::Tensor x = at::randn({2, 6, 24}).requires_grad_(), delta = at::randn({2, 6, 24}).to(out).requires_grad_();
    const at::Tensor a = at::randn({2, 6, 24}), b = at::randn({2, 6, 24});
    NormedSum fused, alone;
    {
      AutocastScope scope(at::kCPU, autocast);
      fused = norm->add_and_norm(x, delta);
      alone = norm->add_and_norm(x, at::Tensor(), /*fp32_copy=*/true);
    }
    EXPECT_EQ(fused.normed.scalar_type(), out);
    EXPECT_EQ(alone.normed_fp32.scalar_type(), at::kFloat);
    EXPECT_TRUE(alone.sum.is_same(x)) << "without a delta the stream passes through";
    const auto [sum, normed] = add_and_norm_by_aten(x, delta, norm->weight, out);
    const auto [unused, normed_alone] = add_and_norm_by_aten(x, at::Tensor(), norm->weight, out);
    expect_close(fused.sum, sum, "sum");
    expect_close(fused.normed.to(at::kFloat), normed.to(at::kFloat), "normed", tol);
    expect_close(alone.normed.to(at::kFloat), normed_alone.to(at::kFloat), "normed without delta", tol);
    const at::Tensor normed32 = at::rms_norm(x, {24}, norm->weight, 1e-5);
    expect_close(alone.normed_fp32, normed32, "fp32 copy");
    auto loss = [&](const NormedSum& with, const NormedSum& without) {
      return (with.sum * a).sum() + (with.normed.to(at::kFloat) * b).sum() + (without.normed.to(at::kFloat) * a).sum() +
             (without.normed_fp32 * b).sum();
    };
    const std::vector<at::Tensor> inputs{x, delta, norm->weight};
    const auto got = torch::autograd::grad({loss(fused, alone)}, inputs);
    const auto want = torch::autograd::grad({loss({sum, normed, {}}, {x, normed_alone, normed32})}, inputs);
    for (size_t i = 0; i < inputs.size(); ++i)
      expect_close(got[i].to(at::kFloat), want[i].to(at::kFloat), "gradient " + std::to_string(i), tol);
  }
}

// On a GPU, RoPE and SwiGLU run fused kernels (layers_cuda.cu); they must agree with the CPU path,
// forward and backward. Runs where a GPU is (scripts/gpu_report.sh); CI has none.
TEST(Rope, CudaKernelMatchesTheCpuPathInAnyLayout) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  const int64_t B = 2, H = 3, T = 5, dh = 16;  // 8 pairs: bf16's 8-wide loads, as at the models' head_dim 64
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const double tol = dtype == at::kFloat ? 1e-6 : 2e-2;
    // Attention's layout: a transposed [B, T, H, dh]; the gradient arrives with a strided last dim.
    const at::Tensor x = at::randn({B, T, H, dh}).to(dtype).transpose(1, 2);
    const at::Tensor g = at::randn({B, H, dh, T}).to(dtype).transpose(2, 3);
    auto run = [&](at::Device device) {
      const at::Tensor xd = x.to(device).requires_grad_(), gd = g.to(device);
      const at::Tensor y = apply_rotary(xd, rotary_tables(11, T, dh, 1e4, device));
      return std::pair{y, torch::autograd::grad({y}, {xd}, {gd})[0]};
    };
    const auto [y_cpu, dx_cpu] = run(at::kCPU);
    const auto [y_gpu, dx_gpu] = run(at::kCUDA);
    EXPECT_EQ(y_gpu.strides(), x.strides()) << "the output keeps the input's layout";
    EXPECT_EQ(y_gpu.scalar_type(), dtype);
    expect_close(y_gpu.cpu().to(at::kFloat), y_cpu.to(at::kFloat), "rope", tol);
    expect_close(dx_gpu.cpu().to(at::kFloat), dx_cpu.to(at::kFloat), "rope backward", tol);
  }
}

TEST(SwiGLU, CudaKernelMatchesTheCpuPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(10);
  SwiGLU cpu(16, 40);
  randomize(*cpu);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    SwiGLU gpu(16, 40);
    for (const auto& p : cpu->named_parameters()) gpu->named_parameters()[p.key()].data().copy_(p.value());
    cpu->to(dtype);
    gpu->to(at::kCUDA, dtype);
    const at::Tensor x = (at::randn({3, 7, 16}) * 2).to(dtype), g = at::randn({3, 7, 16}).to(dtype);
    const at::Tensor y_cpu = cpu(x), y_gpu = gpu(x.cuda());
    const auto d_cpu = torch::autograd::grad({y_cpu}, cpu->parameters(), {g});
    const auto d_gpu = torch::autograd::grad({y_gpu}, gpu->parameters(), {g.cuda()});
    const double tol = dtype == at::kFloat ? 1e-5 : 3e-2;
    expect_close(y_gpu.cpu().to(at::kFloat), y_cpu.to(at::kFloat), "swiglu", tol);
    for (size_t i = 0; i < d_cpu.size(); ++i)
      expect_close(d_gpu[i].cpu().to(at::kFloat), d_cpu[i].to(at::kFloat), "gradient " + std::to_string(i), tol);
    cpu->to(at::kFloat);
  }
}

// The row kernels' GPU launcher: blocks of 128 and 256 threads, more rows than blocks (the
// backward's grid-stride loop and its per-block weight gradients), against the CPU.
TEST(RMSNorm, CudaAddAndNormMatchesTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(17);
  for (int64_t d : {40, 1024})
    for (at::ScalarType out : {at::kFloat, at::kBFloat16}) {
      SCOPED_TRACE(std::to_string(d) + " " + c10::toString(out));
      const double tol = out == at::kFloat ? 1e-5 : 2e-2;
      const at::Tensor x = at::randn({3000, d}), delta = at::randn({3000, d}).to(out), w = at::rand({d}) + 0.5;
      const at::Tensor dy = at::randn({3000, d}).to(out), dsum = at::randn({3000, d}), dy32 = at::randn({3000, d});
      auto run = [&](at::Device device) {
        RMSNorm norm(d, 1e-5);
        norm->weight.data().copy_(w);
        norm->to(device);
        const at::Tensor xd = x.to(device).requires_grad_(), dd = delta.to(device).requires_grad_();
        const NormedSum r = norm->add_and_norm(xd, dd, /*fp32_copy=*/true);
        const auto g = torch::autograd::grad({r.normed, r.sum, r.normed_fp32}, {xd, dd, norm->weight},
                                             {dy.to(device), dsum.to(device), dy32.to(device)});
        return std::vector<at::Tensor>{r.sum.cpu(), r.normed.cpu().to(at::kFloat), r.normed_fp32.cpu(), g[0].cpu(),
                                       g[1].cpu().to(at::kFloat), g[2].cpu()};
      };
      const auto cpu = run(at::kCPU), gpu = run(at::kCUDA);
      const char* names[] = {"sum", "normed", "fp32 copy", "d x", "d delta", "d weight"};
      for (size_t i = 0; i < cpu.size(); ++i) expect_close(gpu[i], cpu[i], names[i], tol);
    }
}

TEST(RMSNorm, MatchesTheFormulaAndKeepsTheInputDtype) {
  torch::manual_seed(6);
  RMSNorm norm(32, 1e-5);
  randomize(*norm);
  const at::Tensor x = at::randn({4, 32}) * 3;
  expect_close(norm(x), test::ref_rms_norm(x, norm->weight, 1e-5), "rmsnorm", 1e-6);
  const at::Tensor xb = x.to(at::kBFloat16);
  EXPECT_EQ(norm(xb).scalar_type(), at::kBFloat16);
  expect_close(norm(xb).to(at::kFloat), test::ref_rms_norm(xb.to(at::kFloat), norm->weight, 1e-5), "bf16", 1e-2);
}

}  // namespace
}  // namespace gqe
