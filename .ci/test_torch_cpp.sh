#!/usr/bin/env bash
# C++ exchange with libtorch: builds c_tests/torch_exchange.cpp against the
# headers and libraries that ship in the PyTorch wheel of the test venv, with
# that wheel's C++ ABI, and runs it (run from the repository root).
set -euo pipefail
VPY="${VPY:-.venv/bin/python}"
read -r torch_dir torch_version abi < <("$VPY" -c \
  "import os, torch; print(os.path.dirname(torch.__file__), torch.__version__, int(torch._C._GLIBCXX_USE_CXX11_ABI))")
mkdir -p c_tests/build
echo "== C++20 exchange with libtorch $torch_version ($torch_dir)"
${CXX:-c++} -std=c++20 -O1 -g -Wall -Wextra -Werror -D_GLIBCXX_USE_CXX11_ABI="$abi" \
  -DLIBTORCH_VERSION="\"$torch_version\"" \
  -isystem "$torch_dir/include" -isystem "$torch_dir/include/torch/csrc/api/include" -Iinclude \
  c_tests/torch_exchange.cpp -o c_tests/build/torch_exchange \
  -Ltarget/release -ldlbridge -Wl,-rpath,"$PWD/target/release" \
  -L"$torch_dir/lib" -ltorch_cpu -lc10 -Wl,-rpath,"$torch_dir/lib"
c_tests/build/torch_exchange
