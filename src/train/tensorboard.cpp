#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "train/metrics.h"

namespace gqe {
namespace {

// Protocol buffer encoding, the few wire types an Event needs.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) out += static_cast<char>((v & 0x7f) | 0x80), v >>= 7;
  out += static_cast<char>(v);
}
void key(std::string& out, int field, int wire) { varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }
template <class T> void fixed(std::string& out, int field, T value) {
  key(out, field, sizeof(T) == 8 ? 1 : 5);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian, as the wire format
  out.append(bytes, sizeof(T));
}
void bytes(std::string& out, int field, const std::string& value) {
  key(out, field, 2);
  varint(out, value.size());
  out += value;
}

// Event: wall_time 1 (double), step 2 (int64), file_version 3, summary 5, session_log 7.
std::string event(double wall_time, int64_t step) {
  std::string e;
  fixed(e, 1, wall_time);
  key(e, 2, 0);
  varint(e, static_cast<uint64_t>(step));
  return e;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

double now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

}  // namespace

uint32_t crc32c(const std::string& data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0x82f63b78u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : data) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

EventWriter::EventWriter(const std::filesystem::path& dir, int64_t after_step) {
  make_directories(dir);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  path_ = dir / fmt::format("events.out.tfevents.{}.{:06d}.{}.gqe", micros / 1000000, micros % 1000000, host);
  file_.emplace(path_, /*truncate=*/true);
  std::string version = event(now(), 0);
  bytes(version, 3, "brain.Event:2");
  record(version);
  std::string start = event(now(), after_step + 1), log;
  key(log, 1, 0);
  varint(log, 1);  // SessionLog.START: TensorBoard purges the steps from here on that it read before
  bytes(start, 7, log);
  record(start);
}

void EventWriter::scalars(int64_t step, double wall_time, const Scalars& values) {
  if (values.empty()) return;
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    bytes(v, 1, tag);
    fixed(v, 2, static_cast<float>(value));  // simple_value
    bytes(summary, 1, v);
  }
  std::string e = event(wall_time, step);
  bytes(e, 5, summary);
  record(e);
}

void EventWriter::record(const std::string& data) {
  const std::string length = le(data.size(), 8);
  file_->append(length + le(masked(crc32c(length)), 4) + data + le(masked(crc32c(data)), 4));
}

Scalars metrics_scalars(const nlohmann::json& line) {
  Scalars out;
  for (const auto& [name, value] : line.items())
    if (value.is_number() && name != "step" && name != "elapsed_s") out.emplace_back(name, value.get<double>());
  if (line.contains("tasks"))
    for (const auto& [task, scores] : line["tasks"].items())
      for (const char* metric : {"acc", "acc_norm", "acc_bytes"})
        if (scores.contains(metric)) out.emplace_back(fmt::format("tasks/{}/{}", task, metric), scores[metric].get<double>());
  if (line.contains("tasks_average"))
    for (const auto& [metric, value] : line["tasks_average"].items())
      if (value.is_number()) out.emplace_back("tasks_average/" + metric, value.get<double>());
  if (line.contains("router")) {
    const auto& entropy = line["router"]["entropy"];
    const auto busiest = busiest_expert_shares(line["router"]);
    for (size_t l = 0; l < busiest.size(); ++l) {
      double most = 0;
      for (double share : busiest[l]) most = std::max(most, share);
      out.emplace_back(fmt::format("router/busiest_expert/layer_{}", l), most);
      out.emplace_back(fmt::format("router/entropy/layer_{}", l), entropy[l].get<double>());
    }
  }
  return out;
}

}  // namespace gqe
