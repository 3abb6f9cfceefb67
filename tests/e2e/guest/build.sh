#!/bin/sh
# Builds (or reuses) the QEMU guest of the end-to-end tests: a cpio initramfs holding
# busybox-static, the virtio-net and qemu_fw_cfg modules of the installed Debian kernel,
# iperf3 with its shared libraries, probe (a tiny static helper, see probe.c)
# and /init (init.sh). Output: tests/e2e/.cache/guest-<key>/initramfs.cpio and
# tests/e2e/.cache/guest.json ({"kernel","initramfs","key"}), read by tests/e2e/qemu.ts.
# The key covers the kernel, busybox, iperf3 and libc versions and the guest sources, so
# a rerun with nothing changed only prints the cached path.
# Environment: TPASST_GUEST_KERNEL=/boot/vmlinuz-X picks a kernel (default: newest).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache="$(cd "$here/.." && pwd)/.cache"

fail() {
  echo "guest/build.sh: $*" >&2
  exit 1
}

need_package() { # need_package PACKAGE PATH
  [ -e "$2" ] || fail "$2 is missing: install the Debian package '$1' (apt-get install $1)"
}

package_version() {
  dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown
}

kernel=${TPASST_GUEST_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -n "$kernel" ] || fail "no /boot/vmlinuz-*: install the Debian package 'linux-image-amd64'"
[ -r "$kernel" ] || fail "kernel $kernel is not readable"
kver=${kernel##*/vmlinuz-}
moddir=/usr/lib/modules/$kver
need_package linux-image-amd64 "$moddir/modules.dep"
need_package busybox-static /bin/busybox
need_package iperf3 /usr/bin/iperf3
need_package qemu-system-x86 /usr/bin/qemu-system-x86_64
need_package cpio /usr/bin/cpio
command -v cc >/dev/null 2>&1 || fail "no C compiler: install the Debian package 'gcc'"
/bin/busybox --list | grep -qx sh || fail "/bin/busybox is not a full busybox (busybox-static)"

sources_hash=$(cat "$here/build.sh" "$here/init.sh" "$here/udhcpc.sh" "$here/probe.c" |
  sha256sum | cut -c1-16)
versions="$kver $(package_version "linux-image-$kver") $(package_version busybox-static)"
versions="$versions $(package_version iperf3) $(package_version libc6) $sources_hash"
key=$(echo "$versions" | sha256sum | cut -c1-16)
out="$cache/guest-$key"
image="$out/initramfs.cpio"

write_manifest() {
  printf '{"kernel":"%s","initramfs":"%s","key":"%s"}\n' "$kernel" "$image" "$key" \
    >"$cache/guest.json.tmp"
  mv "$cache/guest.json.tmp" "$cache/guest.json"
}

if [ -s "$image" ]; then
  write_manifest
  echo "guest/build.sh: cached $image"
  exit 0
fi

mkdir -p "$cache"
staging=$(mktemp -d "$cache/staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
root="$staging/root"
mkdir -p "$root/bin" "$root/sbin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" \
  "$root/tmp" "$root/run" "$root/lib/modules" "$root/www" "$root/usr/bin" "$root/usr/sbin"

# busybox and one symlink per applet
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done

# kernel modules in load order (dependencies from modules.dep first)
order="$staging/modules.order"
: >"$order"
add_module() { # add_module NAME: appends NAME's dependencies, then NAME, once each
  line=$(grep -E "/$1\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -n 1)
  [ -n "$line" ] || fail "module $1 not found in $moddir/modules.dep"
  path=${line%%:*}
  deps=${line#*:}
  reversed=""
  for dep in $deps; do reversed="$dep $reversed"; done
  for dep in $reversed; do
    name=$(basename "$dep" | sed -E 's/\.ko(\.xz|\.zst|\.gz)?$//')
    add_module_file "$name" "$dep"
  done
  add_module_file "$1" "$path"
}
add_module_file() { # add_module_file NAME RELATIVE_PATH
  grep -qx "$1" "$order" && return 0
  target="$root/lib/modules/$1.ko"
  case "$2" in
  *.ko.xz) xz -dc "$moddir/$2" >"$target" ;;
  *.ko.zst) zstd -dqc "$moddir/$2" >"$target" ;;
  *.ko.gz) gzip -dc "$moddir/$2" >"$target" ;;
  *) cp "$moddir/$2" "$target" ;;
  esac
  echo "$1" >>"$order"
}
for module in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
  failover net_failover virtio_net qemu_fw_cfg; do
  add_module "$module"
done
cp "$order" "$root/etc/modules.order"

# iperf3 with its shared libraries and the dynamic loader, at their host paths
cp /usr/bin/iperf3 "$root/usr/bin/iperf3"
ldd /usr/bin/iperf3 | grep -oE '/[^ ]+' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || fail "ldd did not report the dynamic loader of iperf3"

# the static helper
cc -Wall -Wextra -Werror -O2 -static -o "$root/bin/probe" "$here/probe.c" ||
  fail "cannot build probe.c statically (needs the Debian packages gcc and libc6-dev)"

cp "$here/init.sh" "$root/init"
cp "$here/udhcpc.sh" "$root/etc/udhcpc.sh"
chmod 755 "$root/init" "$root/etc/udhcpc.sh"
echo "tpasst guest page" >"$root/www/index.html"

mkdir -p "$out"
(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 >"$image.tmp")
mv "$image.tmp" "$image"
write_manifest
for old in "$cache"/guest-*; do # drop images of earlier keys
  [ "$old" = "$out" ] || rm -rf "$old"
done
echo "guest/build.sh: built $image ($(du -k "$image" | cut -f1) KiB, kernel $kver)"
