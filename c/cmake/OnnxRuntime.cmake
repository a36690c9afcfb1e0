# Finds ONNX Runtime for libisdnet and defines the imported target onnxruntime::onnxruntime.
#
# The library: ONNXRUNTIME_LIBRARY if given (e.g. lib/libonnxruntime.so from ONNX Runtime's
# release archive), else the one inside the onnxruntime Python package of the Python that
# runs the project (its wheel ships onnxruntime/capi/libonnxruntime.so.1.X.Y). A library
# whose folder has the name the loader asks for (its soname, libonnxruntime.so.1) is found
# there through libisdnet's run path; one without it, like the wheel's, is bundled:
# installed beside libisdnet with that link (ISDNET_BUNDLED_ONNXRUNTIME).
#
# The C API header: ONNXRUNTIME_INCLUDE_DIR if given, else onnxruntime_c_api.h taken from
# Debian's libonnxruntime-dev package, pinned by version and SHA-256 and downloaded into the
# build tree only (never into the source tree). Any ONNX Runtime at least as new as the
# header runs with it: libisdnet asks the library for the header's API version.

set(ONNXRUNTIME_INCLUDE_DIR "" CACHE PATH
    "Directory with onnxruntime_c_api.h (default: fetched, pinned, into the build tree)")
set(ONNXRUNTIME_LIBRARY "" CACHE FILEPATH
    "ONNX Runtime shared library (default: the one of the Python onnxruntime package)")
set(ISDNET_ONNXRUNTIME_DEB_URL
    "http://deb.debian.org/debian/pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
    CACHE STRING "Where to download Debian's libonnxruntime-dev 1.21.0+dfsg-1 (for its header)")
set(ISDNET_ONNXRUNTIME_DEB_SHA256
    "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08")

# --- the header ----------------------------------------------------------------------------
if(NOT ONNXRUNTIME_INCLUDE_DIR)
  set(_ort_include "${CMAKE_BINARY_DIR}/onnxruntime/include")
  set(_ort_header "${_ort_include}/onnxruntime_c_api.h")
  if(NOT EXISTS "${_ort_header}")
    set(_deb "${CMAKE_BINARY_DIR}/onnxruntime/libonnxruntime-dev.deb")
    message(STATUS "Downloading ONNX Runtime's C API header (Debian libonnxruntime-dev "
                   "1.21.0+dfsg-1, SHA-256 checked)")
    file(DOWNLOAD "${ISDNET_ONNXRUNTIME_DEB_URL}" "${_deb}"
         EXPECTED_HASH SHA256=${ISDNET_ONNXRUNTIME_DEB_SHA256}
         STATUS _status TLS_VERIFY ON)
    list(GET _status 0 _code)
    if(NOT _code EQUAL 0)
      list(GET _status 1 _why)
      file(REMOVE "${_deb}")
      message(FATAL_ERROR
        "Could not download ${ISDNET_ONNXRUNTIME_DEB_URL} (${_why}). Give ONNX Runtime's "
        "header directory with -DONNXRUNTIME_INCLUDE_DIR=DIR (e.g. include/ of ONNX Runtime's "
        "release archive), or a Debian mirror's URL of the same file with "
        "-DISDNET_ONNXRUNTIME_DEB_URL=URL.")
    endif()
    set(_unpack "${CMAKE_BINARY_DIR}/onnxruntime/unpack")
    file(REMOVE_RECURSE "${_unpack}")
    file(ARCHIVE_EXTRACT INPUT "${_deb}" DESTINATION "${_unpack}")
    file(GLOB _data "${_unpack}/data.tar.*")
    file(ARCHIVE_EXTRACT INPUT "${_data}" DESTINATION "${_unpack}/data"
         PATTERNS usr/include/onnxruntime/onnxruntime_c_api.h)
    file(COPY "${_unpack}/data/usr/include/onnxruntime/onnxruntime_c_api.h"
         DESTINATION "${_ort_include}")
    file(REMOVE_RECURSE "${_unpack}")
    file(REMOVE "${_deb}")
  endif()
  set(ONNXRUNTIME_INCLUDE_DIR "${_ort_include}")
endif()
if(NOT EXISTS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_c_api.h")
  message(FATAL_ERROR "${ONNXRUNTIME_INCLUDE_DIR} has no onnxruntime_c_api.h; give the "
                      "directory that holds it with -DONNXRUNTIME_INCLUDE_DIR=DIR")
endif()
file(STRINGS "${ONNXRUNTIME_INCLUDE_DIR}/onnxruntime_c_api.h" _api REGEX
     "^#define ORT_API_VERSION [0-9]+")
message(STATUS "ONNX Runtime header: ${ONNXRUNTIME_INCLUDE_DIR} (${_api})")

# --- the library ---------------------------------------------------------------------------
set(ISDNET_BUNDLED_ONNXRUNTIME OFF)
if(NOT ONNXRUNTIME_LIBRARY)
  find_package(Python3 COMPONENTS Interpreter)
  if(NOT Python3_Interpreter_FOUND)
    message(FATAL_ERROR "No Python 3 found to locate the onnxruntime package; give ONNX "
                        "Runtime's library with -DONNXRUNTIME_LIBRARY=FILE")
  endif()
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"
    OUTPUT_VARIABLE _package OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _found ERROR_QUIET)
  if(NOT _found EQUAL 0)
    message(FATAL_ERROR "${Python3_EXECUTABLE} cannot import onnxruntime; install it "
                        "(pip install onnxruntime) or give ONNX Runtime's library with "
                        "-DONNXRUNTIME_LIBRARY=FILE")
  endif()
  file(GLOB _candidates "${_package}/capi/libonnxruntime.so.*")
  list(FILTER _candidates INCLUDE REGEX "libonnxruntime\\.so\\.[0-9]+\\.[0-9]+\\.[0-9]+$")
  list(LENGTH _candidates _count)
  if(NOT _count EQUAL 1)
    message(FATAL_ERROR "Expected one libonnxruntime.so.X.Y.Z in ${_package}/capi, found "
                        "'${_candidates}'; give ONNX Runtime's library with "
                        "-DONNXRUNTIME_LIBRARY=FILE")
  endif()
  set(ONNXRUNTIME_LIBRARY "${_candidates}")
endif()
if(NOT EXISTS "${ONNXRUNTIME_LIBRARY}")
  message(FATAL_ERROR "ONNXRUNTIME_LIBRARY ${ONNXRUNTIME_LIBRARY} does not exist")
endif()
get_filename_component(_real "${ONNXRUNTIME_LIBRARY}" REALPATH)
get_filename_component(_real_name "${_real}" NAME)
get_filename_component(ONNXRUNTIME_LIBRARY_DIR "${ONNXRUNTIME_LIBRARY}" DIRECTORY)
# The name the loader looks for (DT_SONAME), read from the file itself.
set(ONNXRUNTIME_SONAME "")
find_program(ISDNET_READELF NAMES readelf)
if(ISDNET_READELF)
  execute_process(COMMAND "${ISDNET_READELF}" -d "${_real}" OUTPUT_VARIABLE _dynamic
                  ERROR_QUIET)
  string(REGEX MATCH "Library soname: \\[([^]]+)\\]" _match "${_dynamic}")
  set(ONNXRUNTIME_SONAME "${CMAKE_MATCH_1}")
endif()
if(NOT ONNXRUNTIME_SONAME)
  string(REGEX MATCH "^libonnxruntime\\.so\\.[0-9]+" ONNXRUNTIME_SONAME "${_real_name}")
endif()
# A library whose folder lacks the name the loader asks for (the wheel's) is bundled.
if(NOT EXISTS "${ONNXRUNTIME_LIBRARY_DIR}/${ONNXRUNTIME_SONAME}")
  set(ISDNET_BUNDLED_ONNXRUNTIME ON)
endif()
if(ISDNET_BUNDLED_ONNXRUNTIME)
  set(_how ", installed beside libisdnet")
else()
  set(_how ", found through libisdnet's run path")
endif()
message(STATUS "ONNX Runtime library: ${_real} (soname ${ONNXRUNTIME_SONAME}${_how})")

add_library(onnxruntime::onnxruntime SHARED IMPORTED)
set_target_properties(onnxruntime::onnxruntime PROPERTIES
  IMPORTED_LOCATION "${_real}"
  IMPORTED_SONAME "${ONNXRUNTIME_SONAME}"
  INTERFACE_INCLUDE_DIRECTORIES "${ONNXRUNTIME_INCLUDE_DIR}")

if(ISDNET_BUNDLED_ONNXRUNTIME)
  # The build tree gets the link the loader needs, so its programs run before installing.
  set(ISDNET_ONNXRUNTIME_BUILD_DIR "${CMAKE_BINARY_DIR}/onnxruntime/lib")
  file(MAKE_DIRECTORY "${ISDNET_ONNXRUNTIME_BUILD_DIR}")
  file(CREATE_LINK "${_real}" "${ISDNET_ONNXRUNTIME_BUILD_DIR}/${_real_name}" SYMBOLIC)
  if(NOT ONNXRUNTIME_SONAME STREQUAL _real_name)
    file(CREATE_LINK "${_real_name}" "${ISDNET_ONNXRUNTIME_BUILD_DIR}/${ONNXRUNTIME_SONAME}"
         SYMBOLIC)
  endif()
  set(ISDNET_ONNXRUNTIME_FILE "${_real}")
  set(ISDNET_ONNXRUNTIME_FILE_NAME "${_real_name}")
endif()
