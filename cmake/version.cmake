# Writes OUT (a C++ line defining GQE_VERSION) from `git describe` of SRC at build time, only when
# it changed, so that a commit rebuilds one file. Outside a git checkout the version is "unknown".
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE version OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE failed)
if(failed OR version STREQUAL "")
  set(version "unknown")
endif()
set(line "#define GQE_VERSION \"${version}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL line)
  file(WRITE "${OUT}" "${line}")
endif()
