// The whole decoder: parity with the reference, causality, batch independence, parameter names
// and initialisation.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <cmath>
#include <map>
#include <set>

#include "model/autocast.h"
#include "model/cross_entropy.h"
#include "model/decoder.h"
#include "model_util.h"
#include "reference.h"

namespace gqe {
namespace {

using test::describe;
using test::every_kind;
using test::small_config;

TEST(Decoder, LogitsAndGradientsMatchTheReference) {
  for (const ModelConfig& c : every_kind()) {
    SCOPED_TRACE(describe(c));
    Decoder model = test::random_decoder(c, 21);
    const at::Tensor tokens = at::randint(c.vocab_size, {2, 6});
    const at::Tensor logits = model->forward(tokens).logits;
    const at::Tensor ref = test::ref_decoder(*model, tokens);
    ASSERT_EQ(logits.sizes(), ref.sizes());
    EXPECT_LE((logits - ref).abs().max().item<double>(), 1e-5 * std::max(1.0, ref.abs().max().item<double>()));

    const at::Tensor target = at::randint(c.vocab_size, {12});
    const std::vector<at::Tensor> params = model->parameters();
    const auto g = torch::autograd::grad({at::cross_entropy_loss(logits.view({12, -1}), target)}, params, {}, true,
                                         false, true);
    const auto g_ref =
        torch::autograd::grad({at::cross_entropy_loss(ref.view({12, -1}), target)}, params, {}, true, false, true);
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_EQ(g[i].defined(), g_ref[i].defined()) << i;
      if (g[i].defined()) {
        EXPECT_LE((g[i] - g_ref[i]).abs().max().item<double>(), 1e-5) << i;
      }
    }
  }
}

// The whole forward and backward on a GPU (fused RoPE, SwiGLU, residual-norm, GQE-slot and loss
// kernels, cuDNN/flash attention, GQE's gather) against the CPU, in fp32 and under bf16 autocast on
// both. Runs where a GPU is; CI has none.
TEST(Decoder, CudaLogitsAndGradientsMatchTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (bool bf16 : {false, true})
    for (const ModelConfig& c : every_kind()) {
      SCOPED_TRACE(describe(c) + (bf16 ? " bf16 autocast" : " fp32"));
      const double tol = bf16 ? 5e-2 : 1e-4;  // bf16: as Decoder.UnderAutocastTheNormsWriteTheMatmulsBf16Inputs
      Decoder cpu = test::random_decoder(c, 22), gpu = test::random_decoder(c, 22);
      gpu->to(at::kCUDA);
      const at::Tensor tokens = at::randint(c.vocab_size, {2, 11});
      const at::Tensor targets = at::randint(c.vocab_size, {22});
      auto forward = [&](Decoder& model, const at::Tensor& t) {
        AutocastScope autocast(t.device().type(), bf16);
        return model->forward(t).logits.to(at::kFloat);
      };
      auto grads = [&](Decoder& model, const at::Tensor& logits, const at::Tensor& t) {
        const at::Tensor loss = token_cross_entropy(logits.view({22, -1}), t);
        return torch::autograd::grad({loss}, model->parameters(), {}, false, false, true);
      };
      const at::Tensor logits_cpu = forward(cpu, tokens), logits_gpu = forward(gpu, tokens.cuda());
      auto scale = [](const at::Tensor& t) { return std::max(1.0, t.abs().max().item<double>()); };
      EXPECT_LE((logits_gpu.cpu() - logits_cpu).abs().max().item<double>(), tol * scale(logits_cpu));
      const auto g_cpu = grads(cpu, logits_cpu, targets), g_gpu = grads(gpu, logits_gpu, targets.cuda());
      for (size_t i = 0; i < g_cpu.size(); ++i) {
        ASSERT_EQ(g_cpu[i].defined(), g_gpu[i].defined()) << i;
        if (g_cpu[i].defined()) {
          EXPECT_LE((g_gpu[i].cpu() - g_cpu[i]).abs().max().item<double>(), tol * scale(g_cpu[i])) << i;
        }
      }
    }
}

TEST(Decoder, ChangingTokenTNeverChangesEarlierLogits) {
  for (const ModelConfig& c : every_kind()) {
    SCOPED_TRACE(describe(c));
    Decoder model = test::random_decoder(c, 8);
    torch::NoGradGuard no_grad;
    const int64_t T = 16;
    for (int64_t t : {0, 5, 15}) {
      at::Tensor tokens = at::randint(c.vocab_size, {2, T});
      const at::Tensor before = model->forward(tokens).logits;
      tokens[0][t] = (tokens[0][t].item<int64_t>() + 1) % c.vocab_size;
      const at::Tensor after = model->forward(tokens).logits;
      if (t > 0) {
        EXPECT_TRUE(after[0].slice(0, 0, t).equal(before[0].slice(0, 0, t))) << "t = " << t;
      }
      EXPECT_GT((after[0].slice(0, t) - before[0].slice(0, t)).abs().max().item<double>(), 1e-4) << "t = " << t;
      EXPECT_TRUE(after[1].equal(before[1]));  // other sequences of the batch are untouched
    }
  }
}

TEST(Decoder, EachSequenceIsComputedIndependentlyOfItsBatch) {
  for (const ModelConfig& c : every_kind()) {
    SCOPED_TRACE(describe(c));
    Decoder model = test::random_decoder(c, 9);
    torch::NoGradGuard no_grad;
    const at::Tensor tokens = at::randint(c.vocab_size, {3, 10});
    const at::Tensor together = model->forward(tokens).logits;
    for (int64_t b = 0; b < 3; ++b) {
      const at::Tensor alone = model->forward(tokens.slice(0, b, b + 1)).logits[0];
      EXPECT_LE((alone - together[b]).abs().max().item<double>(), 1e-5);
    }
  }
}

TEST(Decoder, KVCacheDecodingMatchesTheFullForward) {
  for (const ModelConfig& c : every_kind()) {
    SCOPED_TRACE(describe(c));
    Decoder model = test::random_decoder(c, 31);
    torch::NoGradGuard no_grad;
    const at::Tensor tokens = at::randint(c.vocab_size, {2, 12});
    const at::Tensor full = model->forward(tokens).logits;
    KVCache cache(c, 2, 16, at::TensorOptions().dtype(at::kFloat));
    // A prompt, then a chunk of 3 (queries continuing a cached prefix), then one token at a time.
    std::vector<std::pair<int64_t, int64_t>> pieces{{0, 5}, {5, 8}};
    for (int64_t t = 8; t < 12; ++t) pieces.emplace_back(t, t + 1);
    for (auto [from, to] : pieces) {
      const at::Tensor logits = model->forward(tokens.slice(1, from, to), &cache).logits;
      EXPECT_EQ(cache.length, to);
      EXPECT_LE((logits - full.slice(1, from, to)).abs().max().item<double>(), 1e-5) << from << ".." << to;
    }
    EXPECT_THROW(model->forward(tokens.slice(1, 0, 5), &cache), std::invalid_argument);  // 12 + 5 > 16
  }
}

TEST(Decoder, ParameterNamesAreHuggingFaceLlamaNames) {
  auto names = [](const ModelConfig& c) {
    std::set<std::string> out;
    for (const auto& p : Decoder(c)->named_parameters()) out.insert(p.key());
    return out;
  };
  std::set<std::string> expected{"model.embed_tokens.weight", "model.norm.weight"};
  for (int layer = 0; layer < 2; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                          "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                          "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"})
      expected.insert(p + n);
  }
  EXPECT_EQ(names(small_config(AttentionType::gqa)), expected);

  std::set<std::string> hard = expected;
  for (int layer = 0; layer < 2; ++layer) hard.insert("model.layers." + std::to_string(layer) + ".self_attn.router.weight");
  EXPECT_EQ(names(small_config(AttentionType::gqe, GqeVariant::hard_concat)), hard);

  std::set<std::string> full = hard;
  for (int layer = 0; layer < 2; ++layer) full.insert("model.layers." + std::to_string(layer) + ".self_attn.q_shared.weight");
  EXPECT_EQ(names(small_config(AttentionType::gqe, GqeVariant::gqe)), full);

  ModelConfig untied = small_config(AttentionType::gqa);
  untied.tie_embeddings = false;
  std::set<std::string> with_head = expected;
  with_head.insert("lm_head.weight");
  EXPECT_EQ(names(untied), with_head);
}

TEST(Decoder, InitialisationFollowsTheRecipe) {
  ModelConfig c = small_config(AttentionType::gqe);
  c.d_model = 256;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.head_dim = 32;
  c.ffn_hidden = 512;
  c.n_layers = 8;
  c.vocab_size = 1000;
  c.attention.router_init = RouterInit::zeros;
  torch::manual_seed(0);
  Decoder model(c);
  const double residual_std = 0.02 / std::sqrt(2.0 * 8);
  for (const auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    const at::Tensor& w = p.value();
    SCOPED_TRACE(name);
    if (name.find("norm") != std::string::npos) {
      EXPECT_TRUE(w.eq(1).all().item<bool>());
    } else if (name.find("router") != std::string::npos) {
      EXPECT_TRUE(w.eq(0).all().item<bool>());
    } else {
      const bool residual = name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
      EXPECT_NEAR(w.std().item<double>(), residual ? residual_std : 0.02, 0.06 * (residual ? residual_std : 0.02));
      EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.002);
    }
  }
  c.attention.router_init = RouterInit::normal;
  Decoder normal_router(c);
  EXPECT_NEAR(normal_router->model->layers[0]->as<DecoderLayer>()->self_attn->router->weight.std().item<double>(), 0.02,
              0.003);
}

TEST(Decoder, SameSeedSameParameters) {
  const ModelConfig c = small_config(AttentionType::gqe);
  torch::manual_seed(42);
  Decoder a(c);
  torch::manual_seed(42);
  Decoder b(c);
  torch::manual_seed(43);
  Decoder other(c);
  const auto pa = a->parameters(), pb = b->parameters(), po = other->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(pa[i].equal(pb[i]));
  EXPECT_FALSE(pa[0].equal(po[0]));
}

TEST(Decoder, AuxLossIsTheSumOverLayersAndZeroForGqa) {
  torch::manual_seed(12);
  const at::Tensor tokens = at::randint(61, {2, 8});
  EXPECT_EQ(Decoder(small_config(AttentionType::gqa))->forward(tokens).aux_loss.item<double>(), 0.0);
  EXPECT_TRUE(Decoder(small_config(AttentionType::gqa))->forward(tokens).router.empty());
  ModelConfig c = small_config(AttentionType::gqe);
  c.attention.router_init = RouterInit::zeros;
  const DecoderOutput out = Decoder(c)->forward(tokens);
  // Zero router: uniform probabilities, so each layer's loss is M * sum_m f_m / M = 1 exactly.
  EXPECT_NEAR(out.aux_loss.item<double>(), static_cast<double>(c.n_layers), 1e-6);
  ASSERT_EQ(out.router.size(), 2u);
  EXPECT_EQ(out.router[0].load.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_NEAR(out.router[0].entropy.item<double>(), std::log(2.0), 1e-6);
}

// The balance loss is for training: eval mode (evaluation, generation, prefill) skips it and the
// router statistics, and computes the same logits.
TEST(Decoder, EvalModeSkipsTheBalanceLossOnly) {
  for (const ModelConfig& c : every_kind()) {
    SCOPED_TRACE(describe(c));
    Decoder model = test::random_decoder(c, 13);
    const at::Tensor tokens = at::randint(c.vocab_size, {2, 8});
    const DecoderOutput training = model->forward(tokens);
    model->eval();
    const DecoderOutput eval = model->forward(tokens);
    EXPECT_TRUE(at::equal(eval.logits, training.logits));
    EXPECT_TRUE(eval.router.empty());
    EXPECT_EQ(eval.aux_loss.item<double>(), 0.0);
    if (c.attention.type == AttentionType::gqe) {
      EXPECT_GT(training.aux_loss.item<double>(), 0.0);
    }
  }
}

// A sharded optimizer's all-gathers finish only where the forward pass reaches each part
// (Decoder::set_parameter_wait). Every parameter starts as NaN here and gets its value only when
// the wait names it: any part that read a parameter before waiting for it would show in the
// logits or the gradients. Tied and untied output, with and without activation checkpointing.
TEST(Decoder, EveryPartWaitsForItsParametersBeforeReadingThem) {
  for (ModelConfig c : {small_config(AttentionType::gqa), small_config(AttentionType::gqe)})
    for (const bool tied : {true, false})
      for (const bool checkpointed : {false, true}) {
        c.tie_embeddings = tied;
        SCOPED_TRACE(describe(c) + (tied ? " tied" : " untied") + (checkpointed ? " checkpointed" : ""));
        const at::Tensor tokens = at::randint(c.vocab_size, {2, 6}), target = at::randint(c.vocab_size, {12});
        auto run = [&](Decoder& model) {
          model->set_activation_checkpointing(checkpointed);
          const at::Tensor logits = model->forward(tokens).logits;
          at::cross_entropy_loss(logits.view({12, -1}), target).backward();
          std::vector<at::Tensor> out{logits.detach()};
          for (const at::Tensor& p : model->parameters()) out.push_back(p.grad());
          return out;
        };
        Decoder plain = test::random_decoder(c, 31), waiting = test::random_decoder(c, 31);
        std::map<const void*, at::Tensor> values;
        {
          at::NoGradGuard no_grad;
          for (const at::Tensor& p : waiting->parameters()) values[p.unsafeGetTensorImpl()] = p.clone(), p.fill_(NAN);
        }
        std::vector<int64_t> parts;  // parameters per wait, in order
        waiting->set_parameter_wait([&](const std::vector<at::Tensor>& params) {
          at::NoGradGuard no_grad;
          parts.push_back(static_cast<int64_t>(params.size()));
          for (const at::Tensor& p : params) p.detach().copy_(values.at(p.unsafeGetTensorImpl()));
        });
        const auto expected = run(plain), got = run(waiting);
        ASSERT_EQ(got.size(), expected.size());
        for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(at::equal(got[i], expected[i])) << i;
        // The embedding first, then each layer, the final norm, and the untied output.
        const int64_t per_layer = static_cast<int64_t>(plain->model->layers->ptr(0)->parameters().size());
        std::vector<int64_t> order{1};
        for (int64_t l = 0; l < c.n_layers; ++l) order.push_back(per_layer);
        order.push_back(1);
        if (!tied) order.push_back(1);
        EXPECT_EQ(parts, order);
      }
}

}  // namespace
}  // namespace gqe
