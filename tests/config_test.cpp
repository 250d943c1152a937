// Config loading: inheritance, overrides, typed reading, validation and the messages users see.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "config/config_loader.h"
#include "test_util.h"

namespace gqe {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Runs `load` and returns the UserError's message; fails the test if nothing (or something else) is thrown.
std::string error_loading(const std::string& file, const std::vector<std::string>& overrides = {}) {
  return test::user_error_of([&] { load_config(file, overrides); });
}

// A small valid config to start from.
const char* kBase = R"(
model:
  vocab_size: 512
  d_model: 64
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  head_dim: 16
  ffn_hidden: 128
data:
  seq_len: 64
train:
  tokens: 65536
  global_batch_tokens: 1024
  micro_batch_size: 4
  schedule:
    warmup_tokens: 1024
)";

TEST(Config, ShippedConfigsAllLoad) {
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(GQE_SOURCE_DIR) / "configs")) {
    const auto folder = entry.path().parent_path().filename();
    if (entry.path().extension() != ".yaml" || folder == "experiments" || folder == "ladders") continue;  // not run configs
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW(load_config(entry.path().string()));
    ++count;
  }
  EXPECT_GE(count, 7);
}

TEST(Config, PaperConfigsHoldThePaperSetting) {
  const std::string dir = std::string(GQE_SOURCE_DIR) + "/configs/";
  const Config gqa = load_config(dir + "gqa-250m.yaml").config;
  const Config gqe = load_config(dir + "gqe-250m.yaml").config;
  EXPECT_EQ(gqa.model.attention.type, AttentionType::gqa);
  EXPECT_EQ(gqe.model.attention.type, AttentionType::gqe);
  EXPECT_EQ(gqe.model.attention.top_k, 1);
  EXPECT_EQ(gqe.model.attention.variant, GqeVariant::gqe);
  EXPECT_DOUBLE_EQ(gqe.model.attention.aux_coef, 0.01);
  // Matched budget: everything but the attention is identical.
  Config gqe_as_gqa = gqe;
  gqe_as_gqa.model.attention = gqa.model.attention;
  gqe_as_gqa.log.name = gqa.log.name;
  EXPECT_EQ(to_yaml(gqe_as_gqa), to_yaml(gqa));
  EXPECT_EQ(gqa.train.tokens, 30'000'000'000);
  EXPECT_EQ(gqa.train.global_batch_tokens, 512 * 2048);
  EXPECT_EQ(gqa.train.schedule.warmup_tokens, 3'000'000'000);
  EXPECT_DOUBLE_EQ(gqa.train.optimizer.eps, 1e-7);
  EXPECT_EQ(load_config(dir + "gqe-250m-hard-concat.yaml").config.model.attention.variant, GqeVariant::hard_concat);
  EXPECT_EQ(load_config(dir + "gqe-250m-weighted-concat.yaml").config.model.attention.variant,
            GqeVariant::weighted_concat);
  EXPECT_EQ(gqe.log.name, "gqe-250m");  // run name defaults to the file's stem
}

TEST(Config, InheritMergesSectionsKeyByKey) {
  TempDir dir;
  dir.write("base.yaml", kBase);
  const std::string child = dir.write("sub/child.yaml", R"(
inherit: ../base.yaml
model:
  n_layers: 3
  attention:
    type: gqe
)");
  const LoadedConfig loaded = load_config(child);
  EXPECT_EQ(loaded.config.model.n_layers, 3);      // from the child
  EXPECT_EQ(loaded.config.model.d_model, 64);      // from the parent, same section
  EXPECT_EQ(loaded.config.model.attention.type, AttentionType::gqe);
  EXPECT_EQ(loaded.config.data.seq_len, 64);
  EXPECT_EQ(loaded.origin("model.n_layers"), child);
  EXPECT_EQ(loaded.origin("model.d_model"), (dir.path() / "base.yaml").string());
  EXPECT_EQ(loaded.origin("model.norm_eps"), child);  // a default: blame the file the user named
}

TEST(Config, OverridesApplyAfterInheritance) {
  TempDir dir;
  const std::string file = dir.write("c.yaml", kBase);
  const LoadedConfig loaded = load_config(file, {"model.n_layers=5", "model.attention.type=gqe",
                                                 "eval.tasks.hellaswag=data/hs.bin", "train.optimizer.lr=1e-3"});
  EXPECT_EQ(loaded.config.model.n_layers, 5);
  EXPECT_EQ(loaded.config.model.attention.type, AttentionType::gqe);
  EXPECT_EQ(loaded.config.eval.tasks.at("hellaswag"), "data/hs.bin");
  EXPECT_DOUBLE_EQ(loaded.config.train.optimizer.lr, 1e-3);
  EXPECT_EQ(loaded.config.model.d_model, 64);  // untouched siblings stay
  EXPECT_EQ(loaded.origin("model.n_layers"), "--set");
}

TEST(Config, IntegersAcceptScientificNotationAndSizeSuffixes) {
  TempDir dir;
  const std::string file = dir.write("c.yaml", kBase);
  auto tokens = [&](const std::string& v) { return load_config(file, {"train.tokens=" + v}).config.train.tokens; };
  EXPECT_EQ(tokens("30B"), 30'000'000'000);
  EXPECT_EQ(tokens("3e9"), 3'000'000'000);
  EXPECT_EQ(tokens("1.5M"), 1'500'000);
  EXPECT_EQ(tokens("2_000_000"), 2'000'000);
  EXPECT_EQ(tokens("512K"), 512'000);
  EXPECT_NE(error_loading(file, {"train.tokens=1.5"}).find("expected an integer, got '1.5'"), std::string::npos);
}

TEST(Config, UnknownKeysNameTheFileAndSuggestTheNearestKey) {
  TempDir dir;
  dir.write("base.yaml", kBase);
  const std::string typo = dir.write("typo.yaml", "inherit: base.yaml\nmodel:\n  n_head: 8\n");
  EXPECT_EQ(error_loading(typo), typo + ": unknown key 'model.n_head' (did you mean 'model.n_heads'?)");

  const std::string wrong_section = dir.write("ws.yaml", "inherit: base.yaml\nmodel:\n  seq_len: 128\n");
  EXPECT_EQ(error_loading(wrong_section), wrong_section + ": unknown key 'model.seq_len' (did you mean 'data.seq_len'?)");

  const std::string section = dir.write("sec.yaml", "inherit: base.yaml\ntrian:\n  tokens: 5\n");
  EXPECT_EQ(error_loading(section), section + ": unknown key 'trian' (did you mean 'train'?)");

  const std::string nothing_close = dir.write("far.yaml", "inherit: base.yaml\ndist:\n  xyzzy: 1\n");
  EXPECT_EQ(error_loading(nothing_close),
            nothing_close + ": unknown key 'dist.xyzzy'; valid keys in dist: backend, timeout_s, bucket_mb, "
                            "shard_optimizer, overlap_grad_reduce, overlap_param_gather, reduce_dtype, "
                            "check_replicas_every_steps");

  EXPECT_EQ(error_loading(dir.write("ok.yaml", kBase), {"model.attention.topk=2"}),
            "--set: unknown key 'model.attention.topk' (did you mean 'model.attention.top_k'?)");
}

TEST(Config, WrongTypesAreNamed) {
  TempDir dir;
  const std::string f = dir.write("c.yaml", kBase);
  EXPECT_EQ(error_loading(f, {"model.n_heads=many"}), "--set: model.n_heads: expected an integer, got 'many'");
  EXPECT_EQ(error_loading(f, {"model.tie_embeddings=3"}),
            "--set: model.tie_embeddings: expected true or false, got '3'");
  EXPECT_EQ(error_loading(f, {"model.attention.type=mha"}), "--set: model.attention.type: 'mha' is not one of: gqa, gqe");
  EXPECT_EQ(error_loading(f, {"train.optimizer.lr=fast"}), "--set: train.optimizer.lr: expected a number, got 'fast'");
  EXPECT_EQ(error_loading(f, {"model.attention=gqe"}), "--set: model.attention: expected a section (a mapping), got 'gqe'");
  const std::string list = dir.write("list.yaml", std::string(kBase) + "log:\n  every_steps: [1, 2]\n");
  EXPECT_EQ(error_loading(list), list + ": log.every_steps: expected an integer, got a list");
}

TEST(Config, InconsistentValuesAreRefusedWithTheKeyAndFile) {
  TempDir dir;
  dir.write("base.yaml", kBase);
  const std::string heads = dir.write("heads.yaml", "inherit: base.yaml\nmodel:\n  n_heads: 6\n  n_kv_heads: 4\n");
  EXPECT_EQ(error_loading(heads), heads +
                                      ": model.n_heads: 6 query heads cannot be split into 4 KV groups "
                                      "(model.n_heads must be divisible by model.n_kv_heads)");
  const std::string topk =
      dir.write("topk.yaml", "inherit: base.yaml\nmodel:\n  attention:\n    type: gqe\n    top_k: 3\n");
  EXPECT_EQ(error_loading(topk), topk +
                                     ": model.attention.top_k: must be between 1 and the 2 experts per group "
                                     "(n_heads / n_kv_heads = 4 / 2), got 3");
  const std::string f = (dir.path() / "base.yaml").string();
  EXPECT_EQ(error_loading(f, {"train.tokens=512"}),
            "--set: train.tokens: the budget of 512 tokens is smaller than one global batch "
            "(train.global_batch_tokens = 1024)");
  EXPECT_EQ(error_loading(f, {"train.global_batch_tokens=1000"}),
            "--set: train.global_batch_tokens: 1000 is not a whole number of sequences of data.seq_len = 64");
  const std::string batch = dir.write("batch.yaml", "inherit: base.yaml\ndata:\n  seq_len: 100\n");
  EXPECT_EQ(error_loading(batch),  // the value at fault was set in base.yaml
            f + ": train.global_batch_tokens: 1024 is not a whole number of sequences of data.seq_len = 100");
  EXPECT_EQ(error_loading(f, {"train.micro_batch_size=3"}),
            "--set: train.micro_batch_size: 3 does not divide the 16 sequences of a global batch "
            "(train.global_batch_tokens / data.seq_len)");
  EXPECT_NE(error_loading(f, {"model.head_dim=15"}).find("model.head_dim: must be even for RoPE"), std::string::npos);
  EXPECT_NE(error_loading(f, {"model.n_layers=0"}).find("model.n_layers: must be > 0, got 0"), std::string::npos);
  EXPECT_NE(error_loading(f, {"train.optimizer.beta2=1"}).find("train.optimizer.beta2: must be in [0, 1), got 1"),
            std::string::npos);
  EXPECT_NE(error_loading(f, {"train.schedule.warmup_tokens=60000"}).find("overlap"), std::string::npos);
  EXPECT_NE(error_loading(f, {"log.name=a/b"}).find("log.name"), std::string::npos);
  // A validation of less than a window would be none at all.
  EXPECT_EQ(error_loading(f, {"eval.val_tokens=63"}),
            "--set: eval.val_tokens: 63 is less than one window of data.seq_len = 64 (0: no validation loss)");
  EXPECT_NO_THROW(load_config(f, {"eval.val_tokens=0"}));
  // top_k is only checked where it means something.
  EXPECT_NO_THROW(load_config(f, {"model.attention.top_k=3"}));
}

// Sizes whose counts overflow 64 bits are a config error naming the size to blame, not undefined
// behaviour or an allocator's message (the memory a model needs is checked where it would run).
TEST(Config, SizesThatOverflowAreRefusedNamingTheKey) {
  TempDir dir;
  const std::string f = dir.write("base.yaml", kBase);
  EXPECT_EQ(error_loading(f, {"model.n_layers=9223372036854775807"}),
            "--set: model.n_layers: 9223372036854775807 is too large: the model's counts overflow 64 bits");
  EXPECT_EQ(error_loading(f, {"model.d_model=4611686018427387904"}),
            "--set: model.d_model: 4611686018427387904 is too large: the model's counts overflow 64 bits");
  EXPECT_EQ(error_loading(f, {"model.head_dim=4000000000", "model.n_heads=4000000000", "model.n_kv_heads=1"}),
            "--set: model.n_heads: 4000000000 is too large: the model's counts overflow 64 bits");
  EXPECT_EQ(error_loading(f, {"model.vocab_size=9223372036854775807"}),
            "--set: model.vocab_size: must be at most 2147483647 (token ids are 32-bit), got 9223372036854775807");
  // The logits of a micro-batch are one tensor: its element count must fit too.
  EXPECT_EQ(error_loading(f, {"data.seq_len=4294967296", "train.global_batch_tokens=17179869184",
                              "train.tokens=17179869184", "model.vocab_size=2147483647"}),
            "--set: data.seq_len: 4294967296 is too large: the model's counts overflow 64 bits");
  EXPECT_EQ(error_loading(f, {"dist.timeout_s=99999999999"}), "--set: dist.timeout_s: must be at most 86400 (a day), got 99999999999");
  EXPECT_EQ(error_loading(f, {"dist.timeout_s=1e10"}), "--set: dist.timeout_s: must be at most 86400 (a day), got 10000000000");
  EXPECT_NO_THROW(load_config(f, {"dist.timeout_s=86400"}));
}

// What used to be accepted silently: a directory read as an empty config (the 250M defaults), a
// second YAML document ignored, a run name that leaves log.dir, text that is not UTF-8.
TEST(Config, QuietlyWrongInputIsRefused) {
  TempDir dir;
  const std::string f = dir.write("base.yaml", kBase);
  EXPECT_EQ(error_loading(dir.path().string()), dir.path().string() + ": is a directory, not a config file");
  const std::string inherits_dir = dir.write("child.yaml", "inherit: " + dir.path().string() + "\n");
  EXPECT_EQ(error_loading(inherits_dir), dir.path().string() + ": is a directory, not a config file");
  const std::string two = dir.write("two.yaml", std::string(kBase) + "---\ntrain:\n  tokens: 1\n");
  EXPECT_EQ(error_loading(two), two + ":19: a second YAML document ('---'): a config is one document");
  for (const std::string name : {"..", "."})
    EXPECT_EQ(error_loading(f, {"log.name=" + name}), "--set: log.name: '" + name + "' is not a name for a run directory inside log.dir");
  EXPECT_EQ(error_loading(f, {"log.name=\xff\xfe"}), "--set log.name: the value is not UTF-8 text");
  const std::string latin1 = dir.write("latin1.yaml", std::string(kBase) + "log:\n  name: caf\xe9\n");
  EXPECT_EQ(error_loading(latin1), latin1 + ":19: not UTF-8 text");
  EXPECT_EQ(load_config(f, {"log.name=caf\xc3\xa9"}).config.log.name, "caf\xc3\xa9");  // UTF-8 is fine
  // An empty name is the config file's stem, as when it is not set.
  EXPECT_EQ(load_config(f, {"log.name="}).config.log.name, "base");
}

TEST(Config, FileErrorsAreOneLineWithLocation) {
  TempDir dir;
  EXPECT_EQ(error_loading((dir.path() / "missing.yaml").string()),
            (dir.path() / "missing.yaml").string() + ": cannot open config file (no such file)");
  const std::string bad = dir.write("bad.yaml", "model:\n  d_model: 64\n   n_layers: [\n");
  EXPECT_EQ(error_loading(bad).rfind(bad + ":3:", 0), 0u) << error_loading(bad);
  const std::string dup = dir.write("dup.yaml", "model:\n  d_model: 64\n  d_model: 32\n");
  EXPECT_EQ(error_loading(dup), dup + ":3: duplicate key 'model.d_model'");
  const std::string a = dir.write("a.yaml", "inherit: b.yaml\n");
  dir.write("b.yaml", "inherit: a.yaml\n");
  EXPECT_NE(error_loading(a).find("inherit: cycle"), std::string::npos);
  const std::string orphan = dir.write("orphan.yaml", "inherit: nowhere.yaml\n");
  EXPECT_NE(error_loading(orphan).find("inherit: no such file"), std::string::npos);
  const std::string not_map = dir.write("list.yaml", "- 1\n- 2\n");
  EXPECT_NE(error_loading(not_map).find("a config must be a mapping"), std::string::npos);
  EXPECT_EQ(error_loading(dir.write("ok.yaml", kBase), {"model.n_layers"}),
            "--set: expected key.path=value, got 'model.n_layers'");
  EXPECT_EQ(error_loading((dir.path() / "ok.yaml").string(), {"model.n_layers.x=1"}),
            "--set model.n_layers.x: 'model.n_layers' is a value, not a section");
}

TEST(Config, ResolvedYamlLoadsBackToTheSameConfig) {
  TempDir dir;
  const std::string src = std::string(GQE_SOURCE_DIR) + "/configs/gqe-250m.yaml";
  const Config original = load_config(src, {"train.optimizer.eps=1.234567890123e-7", "eval.tasks.piqa=p.bin",
                                            "log.name=run one"}).config;
  const std::string text = to_yaml(original);
  const Config reloaded = load_config(dir.write("config.yaml", text)).config;
  EXPECT_EQ(to_yaml(reloaded), text);
  EXPECT_EQ(reloaded.train.optimizer.eps, 1.234567890123e-7);  // bit-exact, not rounded
  EXPECT_EQ(reloaded.model.attention.type, AttentionType::gqe);
  EXPECT_EQ(reloaded.train.schedule.decay_shape, DecayShape::linear);
  EXPECT_EQ(reloaded.eval.tasks.at("piqa"), "p.bin");
  EXPECT_EQ(reloaded.log.name, "run one");
  // Every key of the schema is written.
  for (const auto& key : config_keys()) {
    const auto leaf = key.substr(key.rfind('.') + 1);
    EXPECT_NE(text.find(leaf + ":"), std::string::npos) << key;
  }
}

TEST(Config, ReferenceDocumentsEveryKey) {
  const std::string doc = read_file(std::string(GQE_SOURCE_DIR) + "/docs/config.md");
  for (const auto& key : config_keys()) {
    const auto dot = key.find('.');
    if (dot == std::string::npos) {
      EXPECT_NE(doc.find("## `" + key + "`"), std::string::npos) << key;
    } else {
      const std::string in_section = key.substr(dot + 1);  // keys are listed relative to their section
      const bool is_section = in_section.find('.') == std::string::npos &&
                              doc.find("`" + in_section + ".") != std::string::npos;
      EXPECT_TRUE(is_section || doc.find("`" + in_section + "`") != std::string::npos) << key;
    }
  }
}

}  // namespace
}  // namespace gqe
