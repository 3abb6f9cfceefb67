#!/bin/sh
# Runs libvirtd (Debian 12: libvirt 9.0, or 11.3 from bookworm-backports) privately for the e2e tests, started as
#   unshare -m --propagation private tests/e2e/private_libvirtd.sh DIR
# In this private mount namespace, DIR/root/<path> is bind-mounted over each of
# libvirt's system directories, so the host's configuration, state and any system
# libvirtd are neither read nor touched; the daemon's sockets are in DIR/sock
# (URI: qemu:///system?socket=DIR/sock/libvirt-sock). Only the QEMU driver is loaded
# (LIBVIRT_DRIVER_DIR=DIR/drivers): no network driver, so no default network or bridge.
# libvirt looks up the user "libvirt-qemu" (created by libvirt-daemon-system, which we
# do not install) before reading qemu.conf: private copies of /etc/passwd and
# /etc/group get that entry; QEMU itself runs as root (qemu.conf).
# DIR/bin comes first on the daemon's PATH (a `passt` there is what libvirt runs for
# <backend type='passt'/>). The daemon's log: DIR/libvirtd.log; pid: DIR/libvirtd.pid.
# Missing mount points (/var/lib/libvirt... when only libvirt-daemon is installed) are
# created empty on the host; nothing is written into them from here.
set -eu
dir=$1
drivers=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver
[ -e "$drivers/libvirt_driver_qemu.so" ] || drivers=$(dirname "$(find /usr/lib -name libvirt_driver_qemu.so | head -n 1)")
for system_dir in /etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  mkdir -p "$dir/root$system_dir" "$system_dir"
  mount --bind "$dir/root$system_dir" "$system_dir"
done
cp /etc/passwd "$dir/passwd"
cp /etc/group "$dir/group"
getent passwd libvirt-qemu >/dev/null ||
  echo 'libvirt-qemu:x:64055:64055:libvirt (tpasst e2e namespace):/nonexistent:/usr/sbin/nologin' >>"$dir/passwd"
getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >>"$dir/group"
getent group kvm >/dev/null || echo 'kvm:x:64056:' >>"$dir/group"
mount --bind "$dir/passwd" /etc/passwd
mount --bind "$dir/group" /etc/group
mkdir -p "$dir/sock" "$dir/drivers" "$dir/bin"
cat >/etc/libvirt/libvirtd.conf <<CONF
unix_sock_dir = "$dir/sock"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$dir/libvirtd.log"
CONF
# No sVirt, cgroups, per-QEMU mount namespace, virtlogd or chown of the guest's files:
# the test's guest runs as root from files the test owns.
cat >/etc/libvirt/qemu.conf <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
CONF
ln -sf "$drivers/libvirt_driver_qemu.so" "$dir/drivers/"
export LIBVIRT_DRIVER_DIR="$dir/drivers"
export PATH="$dir/bin:$PATH"
exec libvirtd --pid-file "$dir/libvirtd.pid"
