#!/bin/sh
# udhcpc event script of the test guest: applies the lease (address, router, MTU) and
# prints it as TPASST-MARK lines. DNS servers are only reported, never written to
# /etc/resolv.conf: the guest must not resolve names through anything but the test's own
# responder, which scenarios address explicitly.
case "$1" in
deconfig)
  ip -4 addr flush dev "$interface"
  ip link set "$interface" up
  ;;
bound | renew)
  ip -4 addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  if [ -n "$mtu" ]; then ip link set "$interface" mtu "$mtu"; fi
  for r in $router; do
    ip route add default via "$r" dev "$interface" && break
  done
  echo "TPASST-MARK dhcp-ip $ip"
  echo "TPASST-MARK dhcp-mask ${mask:-none}"
  echo "TPASST-MARK dhcp-router ${router:-none}"
  echo "TPASST-MARK dhcp-dns ${dns:-none}"
  echo "TPASST-MARK dhcp-mtu ${mtu:-none}"
  echo "TPASST-MARK dhcp-server ${serverid:-none}"
  echo "$router" | cut -d' ' -f1 >/tmp/router
  ;;
leasefail | nak)
  echo "TPASST-MARK dhcp-failed $1"
  ;;
esac
exit 0
