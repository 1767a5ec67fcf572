# Fallbacks for dependencies that find_package did not find (MHA_FETCH_DEPS=ON).
#
# Each archive is downloaded with file(DOWNLOAD) first, so that a failed download (no network,
# proxy, ...) ends in one clear line that names the Debian package to install, instead of the
# sub-build log FetchContent prints. The local archive is then handed to FetchContent, which
# also honours FETCHCONTENT_SOURCE_DIR_<NAME> (point it at a local checkout to skip the download).
# The MHA_*_URL variables also take a local archive as a file:// URL: .ci/compat points them at
# the archives in ../shared/deps, so that this code runs offline as it does online. To use the
# fallback although a package is installed, configure with -DCMAKE_DISABLE_FIND_PACKAGE_<Name>=ON
# (Eigen3, Catch2, nlohmann_json).
include(FetchContent)

set(MHA_EIGEN_URL "https://gitlab.com/libeigen/eigen/-/archive/3.4.0/eigen-3.4.0.tar.gz"
  CACHE STRING "Eigen archive fetched when Eigen3 is not found")
set(MHA_CATCH2_URL "https://github.com/catchorg/Catch2/archive/refs/tags/v3.7.1.tar.gz"
  CACHE STRING "Catch2 archive fetched when Catch2 is not found")
set(MHA_NLOHMANN_JSON_URL "https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz"
  CACHE STRING "nlohmann_json archive fetched when nlohmann_json is not found")
mark_as_advanced(MHA_EIGEN_URL MHA_CATCH2_URL MHA_NLOHMANN_JSON_URL)

# mha_fetch(<name> URL <url> WHAT <what> PACKAGE <debian package> [OPTIONAL] [NO_ADD])
#   Makes <name> available with FetchContent. NO_ADD: only unpack (no add_subdirectory).
#   On failure: FATAL_ERROR, or with OPTIONAL a warning and <name>_FETCHED=FALSE in the caller.
function(mha_fetch name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "OPTIONAL;NO_ADD" "URL;WHAT;PACKAGE" "")
  string(TOUPPER "${name}" upper)
  string(TOLOWER "${name}" lower)
  set(${name}_FETCHED FALSE PARENT_SCOPE)

  set(source_args URL "${arg_URL}")
  if(FETCHCONTENT_SOURCE_DIR_${upper})
    # The user points at a local copy; FetchContent uses it as it is.
  else()
    set(reason)
    if(FETCHCONTENT_FULLY_DISCONNECTED)
      set(reason "FETCHCONTENT_FULLY_DISCONNECTED is ON")
    else()
      get_filename_component(file_name "${arg_URL}" NAME)
      set(archive "${FETCHCONTENT_BASE_DIR}/${lower}-archive/${file_name}")
      if(NOT EXISTS "${archive}")
        message(STATUS "mha: ${arg_WHAT} not found, fetching ${arg_URL}")
        file(DOWNLOAD "${arg_URL}" "${archive}.part"
          STATUS status TLS_VERIFY ON TIMEOUT 600 INACTIVITY_TIMEOUT 30)
        list(GET status 0 code)
        if(code EQUAL 0)
          file(RENAME "${archive}.part" "${archive}")
        else()
          list(GET status 1 reason)
          file(REMOVE "${archive}.part")
        endif()
      else()
        message(STATUS "mha: ${arg_WHAT} not found, using ${archive}, fetched before from ${arg_URL}")
      endif()
    endif()
    if(NOT "${reason}" STREQUAL "")
      set(msg " mha: ${arg_WHAT} not found and could not be fetched (${reason}); install ${arg_PACKAGE} (cmake/install-deps.sh does it)")
      if(arg_OPTIONAL)
        message(WARNING "${msg}")
        return()
      endif()
      message(FATAL_ERROR "${msg}")
    endif()
    set(source_args URL "${archive}")
  endif()

  if(arg_NO_ADD)
    # A SOURCE_SUBDIR without a CMakeLists.txt makes FetchContent unpack without adding it.
    list(APPEND source_args SOURCE_SUBDIR mha-unpack-only)
  endif()
  FetchContent_Declare(${lower} ${source_args})
  FetchContent_MakeAvailable(${lower})
  set(${name}_FETCHED TRUE PARENT_SCOPE)
endfunction()

# Eigen is header-only: unpack it and describe it with an imported target of the same name as
# Eigen's own (its CMakeLists.txt configures tests, docs and Fortran checks we do not want).
macro(mha_fetch_eigen)
  mha_fetch(Eigen3 URL "${MHA_EIGEN_URL}" WHAT "Eigen3 (>= 3.4)" PACKAGE libeigen3-dev NO_ADD)
  FetchContent_GetProperties(eigen3 SOURCE_DIR mha_eigen_source_dir)
  if(NOT TARGET Eigen3::Eigen)
    add_library(Eigen3::Eigen INTERFACE IMPORTED GLOBAL)
    set_target_properties(Eigen3::Eigen PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${mha_eigen_source_dir}")
  endif()
  # Eigen 5 keeps its version in Eigen/Version as MAJOR.MINOR.PATCH (WORLD stays 3); Eigen 3.4
  # keeps it in Macros.h as WORLD.MAJOR.MINOR.
  if(EXISTS "${mha_eigen_source_dir}/Eigen/Version")
    set(mha_eigen_version_file "${mha_eigen_source_dir}/Eigen/Version")
    set(mha_eigen_version_parts MAJOR MINOR PATCH)
  else()
    set(mha_eigen_version_file "${mha_eigen_source_dir}/Eigen/src/Core/util/Macros.h")
    set(mha_eigen_version_parts WORLD MAJOR MINOR)
  endif()
  file(STRINGS "${mha_eigen_version_file}" mha_eigen_version_lines
    REGEX "#define EIGEN_(WORLD|MAJOR|MINOR|PATCH)_VERSION [0-9]+")
  set(Eigen3_VERSION "")
  foreach(part IN LISTS mha_eigen_version_parts)
    string(REGEX MATCH "EIGEN_${part}_VERSION ([0-9]+)" _ "${mha_eigen_version_lines}")
    list(APPEND Eigen3_VERSION "${CMAKE_MATCH_1}")
  endforeach()
  list(JOIN Eigen3_VERSION "." Eigen3_VERSION)
  set(Eigen3_DIR "${mha_eigen_source_dir}")
  set(Eigen3_FOUND TRUE)
  set(MHA_EIGEN_FETCHED TRUE)
endmacro()

# nlohmann_json is optional (mha::io): a failed fetch only warns.
macro(mha_fetch_nlohmann_json)
  mha_fetch(nlohmann_json URL "${MHA_NLOHMANN_JSON_URL}" WHAT "nlohmann_json"
    PACKAGE nlohmann-json3-dev NO_ADD OPTIONAL)
  if(nlohmann_json_FETCHED AND NOT TARGET nlohmann_json::nlohmann_json)
    FetchContent_GetProperties(nlohmann_json SOURCE_DIR mha_json_source_dir)
    set(mha_json_include "${mha_json_source_dir}/single_include")
    if(NOT EXISTS "${mha_json_include}/nlohmann/json.hpp")
      set(mha_json_include "${mha_json_source_dir}/include")
    endif()
    add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED GLOBAL)
    set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${mha_json_include}")
    set(MHA_NLOHMANN_JSON_FETCHED TRUE)
  endif()
endmacro()

# Catch2 v3 is compiled: add it to the build and expose its Catch.cmake.
macro(mha_fetch_catch2)
  set(CATCH_INSTALL_DOCS OFF CACHE BOOL "")
  set(CATCH_INSTALL_EXTRAS OFF CACHE BOOL "")
  mha_fetch(Catch2 URL "${MHA_CATCH2_URL}" WHAT "Catch2" PACKAGE catch2)
  FetchContent_GetProperties(catch2 SOURCE_DIR mha_catch2_source_dir)
  list(APPEND CMAKE_MODULE_PATH "${mha_catch2_source_dir}/extras")
  # project(Catch2 VERSION ...) set it in Catch2's directory scope only.
  get_directory_property(Catch2_VERSION DIRECTORY "${mha_catch2_source_dir}" DEFINITION Catch2_VERSION)
  set(Catch2_VERSION_MAJOR 3)
  set(MHA_CATCH2_FETCHED TRUE)
endmacro()
