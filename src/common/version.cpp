#include "common/version.h"

#include "gqe_version.inc"  // generated at build time (cmake/version.cmake)

namespace gqe {

const char* gqe_version() { return GQE_VERSION; }

}  // namespace gqe
