// One text column of a Parquet file, read a batch of rows at a time with Apache Arrow's C++ reader
// (only that column is decoded; memory stays at one batch, not one row group or file).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace gqe {

class ParquetColumnReader {
 public:
  // Throws UserError naming the file for an unreadable or corrupt file, a missing column (with the
  // columns there are) or a column that does not hold text.
  ParquetColumnReader(const std::string& path, const std::string& column);
  ~ParquetColumnReader();
  ParquetColumnReader(const ParquetColumnReader&) = delete;
  ParquetColumnReader& operator=(const ParquetColumnReader&) = delete;

  // The next row's text, nothing for a null; false after the last row.
  bool next(std::optional<std::string>& text);
  uint64_t row() const { return row_; }  // 1-based number of the row next() returned last
  uint64_t rows() const;                  // in the file

 private:
  struct Batches;
  std::unique_ptr<Batches> batches_;
  uint64_t row_ = 0;
};

}  // namespace gqe
