// Parameter, head and FLOP accounting: the paper's counts, and agreement with the real module.
#include <gtest/gtest.h>

#include "config/config_loader.h"
#include "model/decoder.h"
#include "model/model_info.h"

namespace gqe {
namespace {

Config paper(const std::string& name) {
  return load_config(std::string(GQE_SOURCE_DIR) + "/configs/" + name).config;
}

int64_t module_params(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& p : Decoder(c)->parameters()) n += p.numel();
  return n;
}

TEST(ModelInfo, PaperConfigsHaveThePaperParameterCounts) {
  EXPECT_EQ(describe_model(paper("gqa-250m.yaml")).total, 252'871'680);
  EXPECT_EQ(describe_model(paper("gqe-250m.yaml")).total, 247'890'944);
  // Ablations: no shared head or weighted slot, so o_proj reads 8 slots and there is no q_shared.
  const int64_t ablation = 252'871'680 + 16 * (8 * 64 * 1024 - 16 * 64 * 1024 + 16 * 1024);
  EXPECT_EQ(describe_model(paper("gqe-250m-hard-concat.yaml")).total, ablation);
  EXPECT_EQ(describe_model(paper("gqe-250m-weighted-concat.yaml")).total, ablation);
}

TEST(ModelInfo, RealGqe250mModuleHasTheCountedParameters) {
  EXPECT_EQ(module_params(paper("gqe-250m.yaml").model), 247'890'944);
}

// ZeRO-1: each of W ranks keeps 1/W of the AdamW moments and receives 1/W of the reduced gradient;
// without it the world size changes nothing per rank.
TEST(ModelInfo, ShardedOptimizerStateFallsAsOneOverTheRanks) {
  Config c = paper("gqe-250m.yaml");
  const ModelInfo one = describe_model(c), plain = describe_model(c, 8);
  EXPECT_DOUBLE_EQ(plain.state_bytes(), one.state_bytes());
  c.dist.shard_optimizer = true;
  const ModelInfo sharded = describe_model(c, 8);
  const double P = static_cast<double>(one.total);
  EXPECT_DOUBLE_EQ(sharded.optimizer_bytes, 8 * P / 8);
  EXPECT_DOUBLE_EQ(sharded.grads_bytes, 4 * P + 4 * P / 8);
  EXPECT_DOUBLE_EQ(sharded.weights_bytes, one.weights_bytes);
}

// With activation checkpointing a layer more costs its fp32 input only (d floats per token), and
// the activation estimate of gqe-250m more than halves (the logits stay).
TEST(ModelInfo, ActivationCheckpointingKeepsOneInputPerLayer) {
  Config c = paper("gqe-250m.yaml");
  const double plain = describe_model(c).activation_bytes;
  c.train.activation_checkpointing = true;
  const double checkpointed = describe_model(c).activation_bytes;
  c.model.n_layers += 1;
  const double tokens = static_cast<double>(c.train.micro_batch_size * c.data.seq_len);
  EXPECT_DOUBLE_EQ(describe_model(c).activation_bytes - checkpointed, tokens * 4.0 * static_cast<double>(c.model.d_model));
  EXPECT_LT(checkpointed, plain / 2);
}

TEST(ModelInfo, CountsAgreeWithTheModuleForEveryKind) {
  Config config;
  ModelConfig& c = config.model;
  c.vocab_size = 101;
  c.d_model = 48;
  c.n_layers = 3;
  c.head_dim = 8;
  c.ffn_hidden = 80;
  for (bool tie : {true, false})
    for (auto [n, g] : {std::pair<int64_t, int64_t>{4, 2}, {6, 2}, {8, 4}})
      for (int64_t k = 1; k <= n / g; ++k)
        for (AttentionType type : {AttentionType::gqa, AttentionType::gqe})
          for (GqeVariant variant : {GqeVariant::gqe, GqeVariant::hard_concat, GqeVariant::weighted_concat}) {
            c.tie_embeddings = tie;
            c.n_heads = n;
            c.n_kv_heads = g;
            c.attention = {type, k, variant};
            SCOPED_TRACE(testing::Message() << enum_name(type) << " " << enum_name(variant) << " N" << n << " G" << g
                                            << " k" << k << " tie " << tie);
            const ModelInfo info = describe_model(config);
            EXPECT_EQ(info.total, module_params(c));
            int64_t embedding = 0;
            for (const auto& p : Decoder(c)->named_parameters())
              if (p.key() == "model.embed_tokens.weight" || p.key() == "lm_head.weight") embedding += p.value().numel();
            EXPECT_EQ(info.non_embedding, info.total - embedding);
          }
}

TEST(ModelInfo, ActiveHeadsAndFlopsFollowTheStatedFormula) {
  const ModelInfo gqa = describe_model(paper("gqa-250m.yaml"));
  const ModelInfo gqe = describe_model(paper("gqe-250m.yaml"));
  EXPECT_EQ(gqa.active_query_heads, 16);
  EXPECT_EQ(gqe.active_query_heads, 9);
  EXPECT_EQ(describe_model(paper("gqe-250m-hard-concat.yaml")).active_query_heads, 8);
  EXPECT_EQ(gqe.output_slots, 10);
  EXPECT_EQ(gqa.kv_cache_values_per_token, gqe.kv_cache_values_per_token);  // GQE keeps GQA's cache

  // 6 x matmul params (all weights but norms; the tied embedding once, as the output projection)
  // + 6 x layers x active heads x head_dim x seq_len.
  const double gqa_matmul = 252'871'680.0 - 16 * 2048 - 1024;
  EXPECT_DOUBLE_EQ(gqa.train_flops_per_token(), 6 * gqa_matmul + 6.0 * 16 * 16 * 64 * 2048);
  const double gqe_matmul = 247'890'944.0 - 16 * 2048 - 1024;
  EXPECT_DOUBLE_EQ(gqe.train_flops_per_token(), 6 * gqe_matmul + 6.0 * 16 * 9 * 64 * 2048);
  // Active parameters: the unselected expert's q_proj rows (8 groups x 1 expert x 64 x 1024 per layer).
  EXPECT_EQ(gqe.active_per_token, 247'890'944 - 16 * 8 * 64 * 1024);
  EXPECT_EQ(gqa.active_per_token, gqa.total);
}

}  // namespace
}  // namespace gqe
