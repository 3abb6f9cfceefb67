#!/bin/sh
# /init of the end-to-end test guest (busybox initramfs).
# Mounts the pseudo file systems, loads the virtio-net and fw_cfg modules, runs the
# scenario script QEMU hands over through fw_cfg (opt/tpasst/scenario) and powers off.
# Serial protocol (one line each, read by tests/e2e/qemu.ts):
#   TPASST-BOOTED <uptime>         userspace is up
#   TPASST-MARK <name> <value...>  a scenario result
#   TPASST-DONE <status>           the scenario script finished (exit status)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /tmp /run /var/run
mount -t tmpfs tmpfs /tmp
echo 1 >/proc/sys/kernel/printk
sysctl -q -w net.ipv4.ping_group_range="0 2147483647" 2>/dev/null

echo "TPASST-BOOTED $(cut -d' ' -f1 /proc/uptime)"
for module in $(cat /etc/modules.order); do
  insmod "/lib/modules/$module.ko" || echo "TPASST-MARK insmod-failed $module"
done

scenario=/sys/firmware/qemu_fw_cfg/by_name/opt/tpasst/scenario/raw
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do
  sleep 0.1
  i=$((i + 1))
done
ip link set lo up
if [ ! -e /sys/class/net/eth0 ]; then
  echo "TPASST-MARK error no-eth0"
  echo "TPASST-DONE 97"
elif [ ! -r "$scenario" ]; then
  echo "TPASST-MARK error no-scenario"
  echo "TPASST-DONE 98"
else
  cp "$scenario" /tmp/scenario.sh
  sh /tmp/scenario.sh
  echo "TPASST-DONE $?"
fi
sync
poweroff -f
reboot -f
