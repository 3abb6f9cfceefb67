#!/usr/bin/env bash
# Puts Debian 13's passt (the 2025 release with vhost-user) and the glibc it needs into a
# cache folder, without installing either: Debian 12's glibc is too old for it. apt reads a
# sources list of its own here (trixie), downloads the two packages, and dpkg -x unpacks
# them. The benchmark then runs passt through that glibc's own loader
# (see tests/e2e/backends.ts, backend "passt-vhost").
#
# Usage: bench/fetch_reference_passt.sh [CACHE_DIR]   (default tests/e2e/.cache/passt-trixie)
# Prints the cache folder; exits 0 at once when it is already filled.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${1:-tests/e2e/.cache/passt-trixie}
root="$cache/root"
if [ -x "$root/usr/bin/passt" ] && [ -x "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]; then
  echo "$cache"
  exit 0
fi
mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial" "$cache/debs"
echo "deb http://deb.debian.org/debian trixie main" >"$cache/sources.list"
apt_options=(
  -q
  -o "Dir::Etc::SourceList=$PWD/$cache/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State=$PWD/$cache/apt"
  -o "Dir::State::status=/dev/null"
  -o "Dir::Cache=$PWD/$cache/apt"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_options[@]}" update >&2
(cd "$cache/debs" && apt-get "${apt_options[@]}" download passt libc6 >&2)
rm -rf "$root"
mkdir -p "$root"
for deb in "$cache"/debs/*.deb; do dpkg -x "$deb" "$root"; done
echo "$cache"
