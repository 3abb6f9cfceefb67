/**
 * The text printed by `--help` (laid out like a man page) and `--version`.
 *
 * @module
 */

import { DEFAULT_LOG_SIZE, MAX_MTU, MIN_MTU } from "./command_line.ts";
import { TPASST_VERSION } from "./version.ts";

/** The `--version` line. */
export function versionText(): string {
  return `tpasst ${TPASST_VERSION}\n`;
}

/** The `--help` text. */
export function helpText(): string {
  return `NAME
    tpasst - user-mode network backend for QEMU virtual machines (passt compatible)

SYNOPSIS
    tpasst [OPTION]...

DESCRIPTION
    tpasst gives a virtual machine network connectivity without privileges: the
    guest's TCP, UDP and ICMP echo traffic is translated to ordinary host sockets, and
    built-in ARP, DHCP, NDP and DHCPv6 servers configure the guest like the host.

    QEMU connects over a unix domain socket using either vhost-user (--vhost-user) or
    passt's stream protocol (-netdev stream). tpasst accepts passt's options and can
    replace the passt binary for QEMU's -netdev passt and for libvirt.

    By default tpasst listens on the first free /tmp/tpasst_N.socket (N = 1..64),
    prints the QEMU options to use, and moves to the background.

OPTIONS
  Frontend connection
    -s, --socket PATH      Listen on the unix socket PATH (also --socket-path)
    --vhost-user           Speak vhost-user instead of the stream protocol
    -F, --fd FD            Serve the already connected socket FD (implies --one-off)
    -1, --one-off          Exit once the first frontend disconnects
    --print-capabilities   Print the vhost-user backend capabilities (JSON) and exit

  Process
    -f, --foreground       Do not move to the background
    -P, --pid FILE         Write the daemon's PID to FILE once it is ready
    --runas USER[:GROUP]   Accepted for compatibility; tpasst never changes user
    --repair-path PATH, --migrate-exit, --migrate-no-linger
                           Accepted for compatibility; migration is not supported
    -h, --help             Show this help and exit
    --version              Show the version and exit

  Logging
    -q, --quiet            Only warnings and errors
    -d, --debug            Debug messages
    --trace                Per-packet messages (implies --debug)
    -e, --stderr           Accepted for compatibility; logs go to standard error
                           unless --log-file is given
    -l, --log-file PATH    Log to PATH instead of standard error
    --log-size BYTES       Limit the log file to BYTES (default ${DEFAULT_LOG_SIZE});
                           the oldest half is dropped when it is full
    -p, --pcap FILE        Capture guest-side frames to FILE (pcap format)

  Guest configuration (defaults are taken from the host)
    -m, --mtu MTU          Announce MTU (${MIN_MTU}-${MAX_MTU}) via DHCP and NDP
    -a, --address ADDR[/PREFIX]
                           Assign ADDR to the guest (once per IP version)
    -n, --netmask MASK     IPv4 netmask, dotted or prefix length
    -g, --gateway ADDR     Default gateway for the guest (once per IP version)
    -M, --mac-addr MAC     MAC address tpasst uses toward the guest
    -i, --interface NAME   Derive addresses and routes from host interface NAME
    -D, --dns ADDR         DNS resolver for the guest (repeatable); 'none' for none
    -S, --search LIST      Space-separated DNS search list; 'none' for none
    --fqdn NAME            Fully qualified name sent via DHCP and DHCPv6
    -H, --hostname NAME    Host name sent via DHCP (option 12)
    --no-dhcp-dns          Do not send DNS resolvers to the guest
    --no-dhcp-search       Do not send the DNS search list to the guest

  Address mapping
    --map-host-loopback ADDR  Guest traffic to ADDR reaches the host's loopback
                              (default: the gateway); 'none' disables
    --map-guest-addr ADDR  Guest traffic to ADDR is sent to the guest's own address
    --no-map-gw            Same as --map-host-loopback none
    --dns-forward ADDR     Forward guest DNS queries sent to ADDR to --dns-host
    --dns-host ADDR        Host resolver for forwarded DNS queries

  Outbound traffic
    -o, --outbound ADDR    Bind outbound sockets to ADDR (once per IP version)
    --outbound-if4 NAME    Bind IPv4 outbound sockets to interface NAME
    --outbound-if6 NAME    Bind IPv6 outbound sockets to interface NAME
    -4, --ipv4-only        Disable IPv6
    -6, --ipv6-only        Disable IPv4

  Protocols
    --no-tcp, --no-udp, --no-icmp     Disable a translation handler
    --no-dhcp, --no-dhcpv6, --no-ndp, --no-ra
                                      Disable a built-in server

  Port forwarding (host to guest)
    -t, --tcp-ports SPEC   Forward TCP ports (repeatable)
    -u, --udp-ports SPEC   Forward UDP ports (repeatable)
    --freebind             Allow binding forwarded ports to non-local addresses

    SPEC is 'none', 'all' (every non-ephemeral port), or a comma-separated list,
    optionally after ADDR/, ADDR%IFNAME/ or %IFNAME/ to bind an address or interface:
        22          host port 22 to guest port 22
        22:23       host port 22 to guest port 23
        22-80       a range
        22-80:32-90 a range mapped to another range of the same length
        ~25         exclude port 25 (exclusions alone forward everything else)

LOGGING
    In the foreground tpasst logs to standard error, or only to --log-file if given.
    When it moves to the background, the messages of its start-up (and the reason if
    it fails) are still printed by the command that started it; after that it logs
    only to --log-file, or nowhere.

EXAMPLES
    tpasst -f -s /tmp/vm.socket -t 2222:22
    qemu-system-x86_64 ... -device virtio-net-pci,netdev=s \\
        -netdev stream,id=s,server=off,addr.type=unix,addr.path=/tmp/vm.socket

SEE ALSO
    passt(1), qemu(1)
`;
}
