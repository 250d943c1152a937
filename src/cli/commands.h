// Subcommands of `gqe`. Each adds itself to the app with its options, help and examples, and does
// its work in the CLI11 callback; errors propagate to main() as exceptions.
#pragma once

namespace CLI {
class App;
}

namespace gqe {

void add_info_command(CLI::App& app);

}  // namespace gqe
