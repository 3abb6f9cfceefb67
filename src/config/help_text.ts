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

    Options follow passt's rules: a long option may be abbreviated to any unique
    prefix; when an option is given more than once the last one wins (-q, -d and
    --trace included), except -t, -u, -D and -S, which add up.

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
    --repair-path PATH     vhost-user: socket a passt-repair helper connects to
                           for TCP_REPAIR in a migration (default SOCKET.repair;
                           "none": no helper, repair mode only as root)
    --migrate-exit         vhost-user: exit after a completed migration as source
    --migrate-no-linger    vhost-user: close migrated sockets at once (no FIN/RST)
    -c, --conf-path PATH   Accepted with a warning: no configuration socket
    --chroot-fallback, --no-splice
                           Accepted; no effect (no sandbox, no splice path)
    -h, --help             Show this help and exit
    --version              Show the version and exit

  Logging
    -q, --quiet            Only warnings and errors
    -d, --debug            Debug messages, time-stamped (DHCP, DHCPv6 and NDP
                           exchanges, forward set-up...)
    --trace                One line per frame each way (implies --debug)
    --stats DELAY          With -f: statistics on standard error at most every
                           DELAY seconds, when frames went through
    -e, --stderr           Accepted for compatibility; no effect
    -l, --log-file PATH    Log to PATH instead of standard error or syslog
    --log-size BYTES       Limit the log file to BYTES (default ${DEFAULT_LOG_SIZE});
                           the oldest half is dropped when it is full
    -p, --pcap FILE        Capture guest-side frames to FILE (pcap format)

  Guest configuration (defaults are taken from the host)
    -m, --mtu MTU          Announce MTU (${MIN_MTU}-${MAX_MTU}) via DHCP and NDP;
                           0 announces none
    -a, --address ADDR[/PREFIX]
                           Assign ADDR to the guest (once per IP version)
    -n, --netmask MASK     IPv4 netmask, dotted or prefix length
    -g, --gateway ADDR     Default gateway for the guest (once per IP version)
    -M, --mac-addr MAC     MAC address tpasst uses toward the guest
    -i, --interface NAME   Derive addresses and routes from host interface NAME
    -D, --dns ADDR         DNS resolver for the guest (repeatable); 'none' for none
    -S, --search LIST      Space-separated DNS search list; 'none' for none
    --fqdn NAME            Fully qualified name sent via DHCP (option 81, to a
                           client asking for it) and DHCPv6 (option 39)
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
    --freebind             Allow binding TCP forwards to non-local addresses

    SPEC is 'none', or a comma-separated list, optionally after ADDR/,
    ADDR%IFNAME/, %IFNAME/ or */ to bind an address or interface:
        22          host port 22 to guest port 22
        22:23       host port 22 to guest port 23
        22-80       a range
        22-80:32-90 a range mapped to another range of the same length
        22:ADDR/23  to guest address ADDR (accepted; tpasst warns that it
                    forwards to the guest's own address)
        ~25         exclude port 25 (exclusions alone forward everything else)
        all         every non-ephemeral port, as far as descriptors allow
    A port given explicitly that cannot be listened on is an error; 'all' skips
    ports in use and says which ports the open-file limit left out.

LOGGING
    In the foreground tpasst logs to standard error, or only to --log-file if given.
    When it moves to the background, the messages of its start-up (and the reason if
    it fails) are still printed by the command that started it; after that it logs
    to --log-file, or else to the system logger (/dev/log, facility daemon, as
    tpasst[PID]; debug lines stay out of it), or nowhere if there is none.

EXAMPLES
    tpasst -f -s /tmp/vm.socket -t 2222:22
    qemu-system-x86_64 ... -device virtio-net-pci,netdev=s \\
        -netdev stream,id=s,server=off,addr.type=unix,addr.path=/tmp/vm.socket

SEE ALSO
    passt(1), qemu(1)
`;
}
