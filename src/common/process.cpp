#include "common/process.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

namespace gqe {

std::string shell_quoted(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+@%") == std::string::npos)
    return s;  // nothing a shell would split or expand: readable as it is
  std::string q = "'";
  for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

CommandOutput run_shell(const std::string& command) {
  CommandOutput r;
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) r.output.append(buffer, n);
  const int status = ::pclose(pipe);
  r.status = status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::filesystem::path executable_directory() { return std::filesystem::read_symlink("/proc/self/exe").parent_path(); }

std::string python_executable() {
  const char* python = std::getenv("GQE_PYTHON");
  return python && *python ? python : GQE_DEFAULT_PYTHON;
}

std::filesystem::path scripts_directory() { return GQE_SCRIPTS_DIR; }

}  // namespace gqe
