#!/usr/bin/env bash
# NVIDIA's user-space driver library (Debian's non-free libcuda1), unpacked
# into build/libcuda: the tests of a real CUDA driver on a machine without a
# GPU (python_tests/test_cuda.py, test_a_real_driver_without_a_device). The
# package is downloaded, not installed (its dependencies are the kernel
# driver's); a failure only leaves that test skipped, saying why.
set -uo pipefail
cd "$(dirname "$0")/.."
dest=build/libcuda
[ -e "$dest/libcuda.so.1" ] && exit 0
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
tmp=$(mktemp -d)
list=/etc/apt/sources.list.d/dlbridge-nonfree.sources
trap 'rm -f "$list"; rm -rf "$tmp"' EXIT
if [ -z "$codename" ] || ! command -v apt-get >/dev/null; then
  echo "fetch_libcuda: not a Debian system: skipped"
  exit 0
fi
printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$codename" > "$list"
if apt-get update -qq -o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 &&
   (cd "$tmp" && apt-get download -qq libcuda1 2>/dev/null) &&
   dpkg-deb -x "$tmp"/libcuda1_*.deb "$tmp/root"; then
  mkdir -p "$dest"
  cp -a "$tmp"/root/usr/lib/*/nvidia/current/libcuda.so* "$dest/"
  echo "fetch_libcuda: $(ls "$dest" | tr "\n" " ")"
else
  echo "fetch_libcuda: could not fetch libcuda1 from Debian non-free: the real-driver test will skip"
fi
exit 0
