#include "data/parquet_input.h"

#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>
#include <parquet/metadata.h>
#include <parquet/properties.h>
#include <parquet/schema.h>

#include <fmt/format.h>

#include <vector>

#include "common/error.h"

namespace gqe {

struct ParquetColumnReader::Batches {
  std::string path;
  std::unique_ptr<parquet::arrow::FileReader> file;
  int leaf = 0;                          // the column's index among the file's leaf columns
  int next_group = 0;                    // row groups are read one at a time, in order
  std::unique_ptr<arrow::RecordBatchReader> batches;  // of the current row group
  std::shared_ptr<arrow::Array> column;  // of the current batch
  int64_t next = 0;                      // its next row
  uint64_t rows = 0;
};

namespace {

constexpr int64_t kBatchRows = 1024;

template <typename T>
T value_or_throw(arrow::Result<T> result, const std::string& path, const char* what) {
  if (!result.ok()) throw UserError(fmt::format("{}: {} ({})", path, what, result.status().message()));
  return std::move(result).ValueUnsafe();
}

// The text of row i of a column of any of Arrow's string or binary layouts.
template <typename ArrayType>
std::optional<std::string> row_text(const arrow::Array& column, int64_t i) {
  const auto& a = static_cast<const ArrayType&>(column);
  if (a.IsNull(i)) return std::nullopt;
  const std::string_view v = a.GetView(i);
  return std::string(v);
}

// Whether text_at reads this layout: the string and binary ones, and dictionaries of them (what a
// file written from a categorical column reads back as).
bool is_text(const arrow::DataType& type) {
  switch (type.id()) {
    case arrow::Type::STRING:
    case arrow::Type::BINARY:
    case arrow::Type::LARGE_STRING:
    case arrow::Type::LARGE_BINARY:
    case arrow::Type::STRING_VIEW:
    case arrow::Type::BINARY_VIEW: return true;
    case arrow::Type::DICTIONARY: return is_text(*static_cast<const arrow::DictionaryType&>(type).value_type());
    default: return false;
  }
}

std::optional<std::string> text_at(const arrow::Array& column, int64_t i) {
  switch (column.type_id()) {
    case arrow::Type::STRING:
    case arrow::Type::BINARY: return row_text<arrow::BinaryArray>(column, i);
    case arrow::Type::LARGE_STRING:
    case arrow::Type::LARGE_BINARY: return row_text<arrow::LargeBinaryArray>(column, i);
    case arrow::Type::STRING_VIEW:
    case arrow::Type::BINARY_VIEW: return row_text<arrow::BinaryViewArray>(column, i);
    default: {  // a dictionary (is_text checked the batch)
      const auto& d = static_cast<const arrow::DictionaryArray&>(column);
      if (d.IsNull(i)) return std::nullopt;
      return text_at(*d.dictionary(), d.GetValueIndex(i));
    }
  }
}

}  // namespace

ParquetColumnReader::ParquetColumnReader(const std::string& path, const std::string& column)
    : batches_(std::make_unique<Batches>()) {
  Batches& b = *batches_;
  b.path = path;
  try {
    auto input = value_or_throw(arrow::io::ReadableFile::Open(path), path, "cannot read");
    // Pages written with a CRC are checked: damage is an error, not different text.
    parquet::ReaderProperties properties = parquet::default_reader_properties();
    properties.set_page_checksum_verification(true);
    parquet::ArrowReaderProperties arrow_properties;
    arrow_properties.set_batch_size(kBatchRows);
    parquet::arrow::FileReaderBuilder builder;
    const arrow::Status opened = builder.Open(input, properties);
    if (!opened.ok()) throw UserError(fmt::format("{}: not a readable Parquet file ({})", path, opened.message()));
    b.file = value_or_throw(builder.properties(arrow_properties)->Build(), path, "not a readable Parquet file");
    const parquet::FileMetaData& meta = *b.file->parquet_reader()->metadata();
    const parquet::SchemaDescriptor& schema = *meta.schema();
    const int leaf = schema.ColumnIndex(column);
    if (leaf < 0) {
      std::vector<std::string> names;
      for (int i = 0; i < schema.num_columns(); ++i) names.push_back(schema.Column(i)->path()->ToDotString());
      throw UserError(fmt::format("{}: no column \"{}\" (columns: {}; choose one with --text-field)", path, column,
                                  fmt::join(names, ", ")));
    }
    const parquet::ColumnDescriptor& descriptor = *schema.Column(leaf);
    if (descriptor.path()->ToDotVector().size() > 1)
      throw UserError(fmt::format("{}: column \"{}\" is inside a struct; gqe-data reads top-level text columns", path, column));
    if (descriptor.physical_type() != parquet::Type::BYTE_ARRAY || descriptor.max_repetition_level() > 0)
      throw UserError(fmt::format("{}: column \"{}\" holds {}, not text", path, column,
                                  descriptor.max_repetition_level() > 0 ? std::string("lists")
                                  : descriptor.logical_type()->is_none()
                                      ? parquet::TypeToString(descriptor.physical_type())
                                      : descriptor.logical_type()->ToString()));
    b.rows = static_cast<uint64_t>(meta.num_rows());
    b.leaf = leaf;
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {  // parquet::ParquetException from the metadata
    throw UserError(fmt::format("{}: not a readable Parquet file ({})", path, e.what()));
  }
}

ParquetColumnReader::~ParquetColumnReader() = default;

uint64_t ParquetColumnReader::rows() const { return batches_->rows; }

bool ParquetColumnReader::next(std::optional<std::string>& text) {
  Batches& b = *batches_;
  while (!b.column || b.next == b.column->length()) {
    std::shared_ptr<arrow::RecordBatch> batch;
    arrow::Status status;
    try {
      if (!b.batches) {
        if (b.next_group == b.file->num_row_groups()) return false;
        auto batches = b.file->GetRecordBatchReader({b.next_group++}, {b.leaf});
        status = batches.status();
        if (status.ok()) b.batches = std::move(batches).ValueUnsafe();
      }
      if (status.ok()) status = b.batches->ReadNext(&batch);
    } catch (const std::exception& e) {
      status = arrow::Status::IOError(e.what());
    }
    if (!status.ok())
      throw UserError(fmt::format("{}: corrupt Parquet data in row group {} of {} ({})", b.path, b.next_group,
                                  b.file->num_row_groups(), status.message()));
    if (!batch) {
      b.batches.reset();
      continue;
    }
    b.column = batch->column(0);
    b.next = 0;
    if (!is_text(*b.column->type()))
      throw UserError(fmt::format("{}: column reads as {}, not text", b.path, b.column->type()->ToString()));
  }
  text = text_at(*b.column, b.next++);
  ++row_;
  return true;
}

}  // namespace gqe
