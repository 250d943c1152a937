// Which gqe this is: `git describe --always --dirty` of the source at build time ("unknown" outside
// a git checkout). Runs log it; ranks of one job compare it.
#pragma once

namespace gqe {

const char* gqe_version();

}  // namespace gqe
