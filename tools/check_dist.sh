#!/usr/bin/env bash
# check_dist.sh — udrm as a library, checked from outside the workspace (CI runs it).
#
# Builds //:udrm_dist (in the default configuration, whose objects the test run already built),
# unpacks it into an empty temporary prefix, then:
#   1. compiles one file including every installed udrm header (nothing may include a header
#      that was not installed, or a bare root like "fence/...");
#   2. configures, builds and runs examples/cmake_consumer with Debian's cmake
#      (find_package(udrm CONFIG) through CMAKE_PREFIX_PATH);
#   3. builds and runs examples/cmake_consumer/page_table_check.cc with
#      `pkg-config --cflags --libs udrm` (PKG_CONFIG_PATH).
# Extra arguments go to the bazel build (e.g. -c opt); CXX, CXXFLAGS and LDFLAGS
# reach both consumer builds (a sanitizer dist needs its flags: --config=tsan with
# CXXFLAGS=-fsanitize=thread LDFLAGS=-fsanitize=thread). Exit 0 only if all pass.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

step() { printf '=== check_dist: [%4ds] %s\n' "$SECONDS" "$*"; }

step "./bazelw build //:udrm_dist $*"
./bazelw build "$@" //:udrm_dist
tarball=$(./bazelw info "$@" bazel-bin 2>/dev/null)/udrm_dist.tar.gz
[ -f "$tarball" ] || { echo "check_dist: no tarball at '$tarball'" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/udrm_check_dist.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
mkdir -p "$prefix"
tar -xzf "$tarball" -C "$prefix"
step "unpacked $(du -sh "$tarball" | cut -f1) into $prefix"
for f in lib/libudrm.a lib/libudrm_absl.a lib/pkgconfig/udrm.pc lib/cmake/udrm/udrmConfig.cmake \
         lib/cmake/udrm/udrmConfigVersion.cmake include/udrm/sched/scheduler.h \
         share/doc/udrm/LICENSE; do
  [ -f "$prefix/$f" ] || { echo "check_dist: $f missing from the dist" >&2; exit 1; }
done
grep -q '^License: Apache-2.0$' "$prefix/lib/pkgconfig/udrm.pc"
grep -q 'set(udrm_LICENSE "Apache-2.0")' "$prefix/lib/cmake/udrm/udrmConfig.cmake"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cxx=${CXX:-c++}

step "every installed header, through pkg-config's flags"
(cd "$prefix/include" && find udrm -path udrm/third_party -prune -o -name '*.h' -print | sort |
   sed 's/.*/#include <&>/') > "$work/all_headers.cc"
# shellcheck disable=SC2046,SC2086  # flag lists: split on purpose
"$cxx" -std=c++20 -fsyntax-only -Wall -Werror ${CXXFLAGS:-} $(pkg-config --cflags udrm) \
  "$work/all_headers.cc"

step "cmake: examples/cmake_consumer"
cmake -S "$repo/examples/cmake_consumer" -B "$work/cmake_build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release
cmake --build "$work/cmake_build" -j 2
"$work/cmake_build/toy_gpu"

step "pkg-config: examples/cmake_consumer/page_table_check.cc"
# shellcheck disable=SC2046,SC2086  # flag lists: split on purpose
"$cxx" -std=c++20 -Wall -Werror ${CXXFLAGS:-} "$repo/examples/cmake_consumer/page_table_check.cc" \
  $(pkg-config --cflags --libs udrm) ${LDFLAGS:-} -o "$work/page_table_check"
"$work/page_table_check"

step "PASS"
