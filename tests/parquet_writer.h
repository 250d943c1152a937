// Test fixtures in Parquet, written by Apache Arrow's own writer: one text column (nulls where a
// document is std::nullopt) beside an integer column, in row groups of `group_rows`.
#pragma once

#include <arrow/api.h>
#include <nlohmann/json.hpp>
#include <arrow/array/builder_dict.h>
#include <arrow/io/file.h>
#include <parquet/arrow/writer.h>
#include <parquet/properties.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace gqe::test {

struct ParquetLayout {
  int64_t group_rows = 1000;
  std::string column = "text";
  bool large_strings = false;  // large_utf8 instead of utf8
  bool binary = false;         // a binary column (no UTF-8 promise)
  bool dictionary = false;     // a dictionary of strings (a categorical), its Arrow type stored
  bool checksums = true;       // page CRCs, as Spark and recent writers add
  parquet::Compression::type compression = parquet::Compression::ZSTD;
};

inline void check(const arrow::Status& s) {
  if (!s.ok()) throw std::runtime_error(s.ToString());
}

inline void write_parquet(const std::string& path, const std::vector<std::optional<std::string>>& texts,
                          const ParquetLayout& layout = {}) {
  std::shared_ptr<arrow::Array> text_array;
  auto fill = [&](auto& builder) {
    for (const auto& t : texts) check(t ? builder.Append(*t) : builder.AppendNull());
    check(builder.Finish(&text_array));
  };
  if (layout.dictionary) {
    arrow::StringDictionaryBuilder b;
    fill(b);
  } else if (layout.binary) {
    arrow::BinaryBuilder b;
    fill(b);
  } else if (layout.large_strings) {
    arrow::LargeStringBuilder b;
    fill(b);
  } else {
    arrow::StringBuilder b;
    fill(b);
  }
  arrow::Int64Builder ids;
  for (size_t i = 0; i < texts.size(); ++i) check(ids.Append(static_cast<int64_t>(i)));
  std::shared_ptr<arrow::Array> id_array;
  check(ids.Finish(&id_array));
  const auto schema = arrow::schema({arrow::field("id", arrow::int64()), arrow::field(layout.column, text_array->type())});
  const auto table = arrow::Table::Make(schema, {id_array, text_array});
  auto out = arrow::io::FileOutputStream::Open(path);
  check(out.status());
  parquet::WriterProperties::Builder properties;
  properties.compression(layout.compression);
  if (layout.checksums) properties.enable_page_checksum();
  // pyarrow stores the Arrow schema, so that a dictionary reads back as one; Arrow's C++ default does not.
  const auto arrow_properties = parquet::ArrowWriterProperties::Builder().store_schema()->build();
  check(parquet::arrow::WriteTable(*table, arrow::default_memory_pool(), *out, layout.group_rows, properties.build(),
                                   arrow_properties));
  check((*out)->Close());
}

// The same rows as JSON Lines, row i on line i + 1: a null is an empty text, as gqe reads one.
inline std::string jsonl_of(const std::vector<std::optional<std::string>>& texts) {
  std::string jsonl;
  for (const auto& t : texts) jsonl += nlohmann::json{{"text", t.value_or("")}}.dump() + "\n";
  return jsonl;
}

}  // namespace gqe::test
