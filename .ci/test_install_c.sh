#!/usr/bin/env bash
# `make install` into a scratch prefix, then build C consumers against the
# installed copy: with pkg-config (shared and static) and with CMake's
# find_package (both imported targets); check the soname, the links and that
# a request for an incompatible version is refused. Run from the repo root.
set -euo pipefail
prefix="$PWD/build/prefix"
work="$PWD/build/install-test"
rm -rf "$prefix" "$work" && mkdir -p "$work"
make --no-print-directory install PREFIX="$prefix" > "$work/install.log"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
abi=$(readelf -d "$prefix/lib/libdlbridge.so.$version" | sed -n 's/.*soname: \[libdlbridge.so.\(.*\)\]/\1/p')
passed=0
ok() { passed=$((passed + 1)); echo "ok     $1"; }

[[ "$abi" == 0.* || "$abi" == "${version%%.*}" ]] && ok "soname libdlbridge.so.$abi"
[ "$(readlink "$prefix/lib/libdlbridge.so")" = "libdlbridge.so.$abi" ] && \
  [ "$(readlink "$prefix/lib/libdlbridge.so.$abi")" = "libdlbridge.so.$version" ] && ok "development and soname links"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion dlbridge)" = "$version" ] && ok "pkg-config --modversion"
cc -std=c99 -Wall -Wextra -Werror -DEXPECTED_VERSION="\"$version\"" c_tests/installed/consumer.c \
  $(pkg-config --cflags --libs dlbridge) -Wl,-rpath,"$prefix/lib" -o "$work/pc_shared"
readelf -d "$work/pc_shared" | grep -q "NEEDED.*\[libdlbridge.so.$abi\]" && ok "linked against the soname"
"$work/pc_shared" "pkg-config, shared"
cc -std=c99 -Wall -Wextra -Werror -DEXPECTED_VERSION="\"$version\"" c_tests/installed/consumer.c \
  $(pkg-config --cflags dlbridge) "$prefix/lib/libdlbridge.a" $(pkg-config --libs-only-l --static dlbridge | sed 's/-ldlbridge//') \
  -o "$work/pc_static"
! readelf -d "$work/pc_static" | grep -q libdlbridge && ok "static build needs no libdlbridge.so"
"$work/pc_static" "pkg-config, static"

cmake -S c_tests/installed -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DEXPECTED_VERSION="$version" \
  -DCMAKE_BUILD_TYPE=Release > "$work/cmake.log"
cmake --build "$work/cmake" > "$work/cmake-build.log"
"$work/cmake/consumer_shared" "cmake find_package, dlbridge::dlbridge"
"$work/cmake/consumer_static" "cmake find_package, dlbridge::dlbridge_static"
mkdir -p "$work/too-new" && sed 's/find_package(dlbridge 0.1 REQUIRED)/find_package(dlbridge 0.99 REQUIRED)/' \
  c_tests/installed/CMakeLists.txt > "$work/too-new/CMakeLists.txt" && cp c_tests/installed/consumer.c "$work/too-new/"
if cmake -S "$work/too-new" -B "$work/too-new/build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/too-new.log" 2>&1; then
  echo "FAILED find_package(dlbridge 0.99) accepted $version"
else
  grep -q "$version" "$work/too-new.log" && ok "find_package(dlbridge 0.99) refuses $version"
fi
echo "install test (C, pkg-config, CMake): $passed passed, $((6 - passed)) failed"
[ "$passed" -eq 6 ]
