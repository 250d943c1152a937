// --nproc N for commands that can run as N local ranks (train, eval): the built-in launcher.
#pragma once

namespace CLI {
class App;
}

namespace gqe {

// With nproc > 1, runs this command line (minus --nproc) as nproc ranks and returns true (the
// process exits with the job's status if it failed); with 1, returns false: run in this process.
// Throws UserError when already inside a launched job.
bool launch_if_requested(int nproc, int argc, char** argv);

// Adds the --nproc option.
void add_nproc_option(CLI::App* command, int& nproc);

}  // namespace gqe
