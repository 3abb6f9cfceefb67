import { assertEquals, assertThrows, assertTrue } from "../../tests/support/assert.ts";
import { DAEMON_READY_FD_OPTION } from "../../ffi/process.ts";
import { parseCommandLine } from "./command_line.ts";
import type { Config } from "./config.ts";
import { ConfigError } from "./config_error.ts";

function parse(...args: string[]): Config {
  return parseCommandLine(args);
}

function rejects(args: string[], pattern: RegExp): void {
  const error = assertThrows(() => parseCommandLine(args), pattern);
  assertTrue(error instanceof ConfigError, `${args.join(" ")}: not a ConfigError: ${error}`);
  assertTrue(!error.message.includes("\n"), `${args.join(" ")}: message is not one line`);
}

Deno.test("parseCommandLine() gives passt's defaults for an empty command line", () => {
  const c = parse();
  assertEquals(c.action, "run");
  assertEquals(c.mode, "stream");
  assertEquals([c.socketPath, c.fd, c.oneOff, c.foreground, c.pidFile], [
    null,
    null,
    false,
    false,
    null,
  ]);
  assertEquals(c.log, { level: "info", file: null, maxSize: 1048576 });
  assertEquals([c.mtu, c.macAddress, c.interfaceName], [null, null, null]);
  assertEquals([c.ipv4Enabled, c.ipv6Enabled], [true, true]);
  assertEquals(c.dns, {
    servers: null,
    search: null,
    fqdn: null,
    hostname: null,
    sendServers: true,
    sendSearch: true,
  });
  assertEquals(Object.values(c.protocols).every((x) => x), true);
  assertEquals([c.tcpForwards.specs, c.udpForwards.specs], [[], []]);
  assertEquals(c.internal, { listenFd: null, readyFd: null, statusFd: null });
  assertEquals([c.notes, c.statsDelay, c.freebind], [[], null, false]);
});

Deno.test("parseCommandLine() returns a deeply frozen config", () => {
  const c = parse("-a", "10.0.0.2", "-t", "22", "-D", "1.1.1.1");
  assertTrue(Object.isFrozen(c));
  assertTrue(Object.isFrozen(c.ipv4));
  assertTrue(Object.isFrozen(c.dns.servers));
  assertTrue(Object.isFrozen(c.tcpForwards.specs[0].forwards[0]));
  assertThrows(() => {
    (c as { mtu: number | null }).mtu = 1;
  }, /read.only|Cannot assign/);
});

Deno.test("parseCommandLine() selects the action", () => {
  assertEquals(parse("-h").action, "help");
  assertEquals(parse("--help").action, "help");
  assertEquals(parse("--version").action, "version");
  assertEquals(parse("--print-capabilities").action, "print-capabilities");
  assertEquals(parse("--print-capabilities", "--vhost-user").action, "print-capabilities");
});

Deno.test("parseCommandLine() parses socket, fd and process options", () => {
  assertEquals(parse("-s", "/tmp/x.sock").socketPath, "/tmp/x.sock");
  assertEquals(parse("--socket", "/tmp/x.sock").socketPath, "/tmp/x.sock");
  assertEquals(parse("--socket-path", "/tmp/y.sock").socketPath, "/tmp/y.sock");
  assertEquals(parse("--socket=/tmp/z").socketPath, "/tmp/z");
  assertEquals(parse("--vhost-user").mode, "vhost-user");
  const fd = parse("-F", "3");
  assertEquals([fd.fd, fd.oneOff], [3, true]);
  assertEquals(parse("--fd", "17").fd, 17);
  assertEquals(parse("-1").oneOff, true);
  assertEquals(parse("--one-off").oneOff, true);
  assertEquals(parse("-f").foreground, true);
  assertEquals(parse("--foreground").foreground, true);
  assertEquals(parse("-P", "/run/p.pid").pidFile, "/run/p.pid");
  assertEquals(parse("--pid", "p.pid").pidFile, "p.pid");
  assertEquals(parse("-p", "/tmp/c.pcap").pcapFile, "/tmp/c.pcap");
  assertEquals(parse("--pcap", "c.pcap").pcapFile, "c.pcap");
  assertEquals(parse("--runas", "nobody").runas, "nobody");
  assertEquals(parse("--runas", "1000:1000").runas, "1000:1000");
  assertEquals(parse("--freebind").freebind, true);
  const internal = parse(
    "--internal-listen-fd",
    "5",
    "--internal-status-fd",
    "7",
    `${DAEMON_READY_FD_OPTION}=6`,
  );
  assertEquals(internal.internal, { listenFd: 5, readyFd: 6, statusFd: 7 });
});

Deno.test("parseCommandLine() rejects bad socket, fd and process options", () => {
  rejects(["-s"], /^--socket: option requires an argument$/);
  rejects(["-s", "/tmp/" + "x".repeat(103)], /^--socket: ".*" is longer than 107 bytes/);
  rejects(["-s", ""], /^--socket: "" is not a valid path/);
  rejects(["--fd", "abc"], /^--fd: "abc" is not a valid file descriptor \(3-1048575\)/);
  rejects(["--fd", "2"], /^--fd: "2" is not a valid file descriptor/);
  rejects(["--fd", "-1"], /^--fd: "-1" is not a valid file descriptor/);
  rejects(["--fd", "1"], /^--fd: "1" is not a valid file descriptor/);
  rejects(["--fd", "3", "--internal-listen-fd", "4"], /--fd cannot be combined/);
  rejects(["-P", ""], /^--pid: "" is not a valid path/);
  rejects(["--runas", "a b"], /^--runas: "a b" is not UID/);
  rejects(["--foreground=yes"], /^--foreground: option takes no argument$/);
  rejects(["--daemon-ready-fd=x"], /^--daemon-ready-fd: "x" is not a valid file descriptor/);
});

Deno.test("parseCommandLine() parses logging options", () => {
  assertEquals(parse("-q").log.level, "warn");
  assertEquals(parse("--quiet").log.level, "warn");
  assertEquals(parse("-d").log.level, "debug");
  assertEquals(parse("--debug").log.level, "debug");
  assertEquals(parse("--trace").log.level, "trace");
  assertEquals(parse("-d", "--trace").log.level, "trace");
  assertEquals(parse("-e").log.level, "info");
  assertEquals(parse("-l", "/tmp/t.log").log.file, "/tmp/t.log");
  assertEquals(parse("--log-file", "t.log", "--log-size", "4096").log, {
    level: "info",
    file: "t.log",
    maxSize: 4096,
  });
});

Deno.test("parseCommandLine() rejects bad logging options", () => {
  rejects(["--log-size", "100"], /^--log-size: "100" is not a valid log size in bytes \(4096-/);
  rejects(["--log-size", "1M"], /^--log-size: "1M" is not a valid log size/);
  rejects(["-l"], /^--log-file: option requires an argument$/);
});

Deno.test("parseCommandLine() parses the MTU, MAC and interface", () => {
  assertEquals(parse("-m", "68").mtu, 68);
  assertEquals(parse("--mtu", "65520").mtu, 65520);
  assertEquals(parse("--mtu=1500").mtu, 1500);
  assertEquals(parse("-M", "52:54:00:AB:cd:01").macAddress, "52:54:00:ab:cd:01");
  assertEquals(parse("--mac-addr", "9a:55:9a:55:9a:55").macAddress, "9a:55:9a:55:9a:55");
  assertEquals(parse("-i", "eth0").interfaceName, "eth0");
  assertEquals(parse("--interface", "does-not-exist0").interfaceName, "does-not-exist0");
});

Deno.test("parseCommandLine() rejects bad MTU, MAC and interface values", () => {
  rejects(["--mtu", "70000"], /^--mtu: "70000" is not a valid MTU \(0 for none, or 68-65520\)$/);
  rejects(["-m", "67"], /^--mtu: "67" is not a valid MTU \(0 for none, or 68-65520\)$/);
  rejects(["-m", "1500x"], /^--mtu: "1500x" is not a valid MTU/);
  rejects(["-m", ""], /^--mtu: "" is not a valid MTU/);
  rejects(["-m"], /^--mtu: option requires an argument$/);
  rejects(["-m", "1500", "-m", "00"], /^--mtu: "00" is not a valid MTU/);
  rejects(["-M", "52:54:00:12:34"], /^--mac-addr: "52:54:00:12:34" is not a MAC address/);
  rejects(["-M", "52-54-00-12-34-56"], /is not a MAC address/);
  rejects(["-M", "01:00:5e:00:00:01"], /is a multicast MAC address/);
  rejects(["-M", "00:00:00:00:00:00"], /is the all-zero MAC address/);
  rejects(["-i", "a/b"], /^--interface: "a\/b" is not a valid interface name/);
  rejects(["-i", "sixteen-chars-xx"], /is not a valid interface name/);
  rejects(["--outbound-if4", "a b"], /^--outbound-if4: "a b" is not a valid interface name/);
  rejects(["--outbound-if6", ""], /^--outbound-if6: "" is not a valid interface name/);
});

Deno.test("parseCommandLine() parses addresses per IP version", () => {
  const c = parse(
    "-a",
    "10.0.2.15",
    "-a",
    "2001:DB8:0:0::15",
    "-n",
    "255.255.255.0",
    "-g",
    "10.0.2.2",
    "-g",
    "fe80::1",
    "-o",
    "192.0.2.7",
    "--outbound",
    "2001:db8::7",
    "--outbound-if4",
    "eth0",
    "--outbound-if6",
    "eth1",
  );
  assertEquals(
    [
      c.ipv4.address,
      c.ipv4.prefixLength,
      c.ipv4.gateway,
      c.ipv4.outbound,
      c.ipv4.outboundInterface,
    ],
    ["10.0.2.15", 24, "10.0.2.2", "192.0.2.7", "eth0"],
  );
  assertEquals(
    [c.ipv6.address, c.ipv6.gateway, c.ipv6.outbound, c.ipv6.outboundInterface],
    ["2001:db8::15", "fe80::1", "2001:db8::7", "eth1"],
  );
  assertEquals(parse("-n", "16").ipv4.prefixLength, 16);
  assertEquals(parse("--netmask", "255.255.255.255").ipv4.prefixLength, 32);
  assertEquals(parse("-a", "::ffff:0:a00:1").ipv6.address, "::ffff:0:a00:1");
  assertEquals(parse("-a", "2001:db8::1.2.3.4").ipv6.address, "2001:db8::102:304");
});

Deno.test("parseCommandLine() rejects bad addresses", () => {
  rejects(["-a", "10.0.2"], /^--address: "10.0.2" is not an IPv4 or IPv6 address$/);
  rejects(["-a", "10.0.2.256"], /is not an IPv4 or IPv6 address/);
  rejects(["-a", "010.0.2.1"], /is not an IPv4 or IPv6 address/);
  rejects(["-a", "1::2::3"], /is not an IPv4 or IPv6 address/);
  rejects(["-a", "0.0.0.0"], /^--address: "0.0.0.0" is the unspecified address$/);
  rejects(["-a", "127.0.0.1"], /is a loopback address/);
  rejects(["-a", "::1"], /is a loopback address/);
  rejects(["-a", "224.0.0.1"], /is a multicast address/);
  rejects(["-a", "ff02::1"], /is a multicast address/);
  rejects(["-a", "255.255.255.255"], /broadcast/);
  rejects(["-a", "::ffff:10.0.0.1"], /IPv4-mapped/);
  rejects(["-g", "x"], /^--gateway: "x" is not an IPv4 or IPv6 address$/);
  rejects(["-o", "::"], /^--outbound: "::" is the unspecified address$/);
  assertEquals(parse("-o", "127.0.0.1").ipv4.outbound, "127.0.0.1");
  rejects(["-p", ""], /^--pcap: "" is not a valid path$/);
  rejects(["-l", ""], /^--log-file: "" is not a valid path$/);
  rejects(["-n", "33"], /^--netmask: "33" is not a netmask/);
  rejects(["-n", "0"], /^--netmask: "0" is not a netmask/);
  rejects(["-n", "255.0.255.0"], /^--netmask: "255.0.255.0" is not a netmask/);
});

Deno.test("parseCommandLine() parses IP version switches", () => {
  const v4 = parse("-4");
  assertEquals([v4.ipv4Enabled, v4.ipv6Enabled], [true, false]);
  const v6 = parse("--ipv6-only");
  assertEquals([v6.ipv4Enabled, v6.ipv6Enabled], [false, true]);
});

Deno.test("parseCommandLine() parses DNS options", () => {
  const c = parse("-D", "1.1.1.1", "--dns", "2606:4700::1111", "-D", "127.0.0.53", "-D", "1.1.1.1");
  assertEquals(c.dns.servers, ["1.1.1.1", "2606:4700::1111", "127.0.0.53"]);
  assertEquals(parse("-D", "none").dns.servers, []);
  assertEquals(parse("-S", "example.com lab.example.org.").dns.search, [
    "example.com",
    "lab.example.org.",
  ]);
  assertEquals(parse("--search", "none").dns.search, []);
  assertEquals(parse("--fqdn", "vm1.example.com").dns.fqdn, "vm1.example.com");
  const off = parse("--no-dhcp-dns", "--no-dhcp-search");
  assertEquals([off.dns.sendServers, off.dns.sendSearch], [false, false]);
  const fwd = parse(
    "--dns-forward",
    "10.0.2.3",
    "--dns-forward",
    "fd00::3",
    "--dns-host",
    "127.0.0.1",
  );
  assertEquals([fwd.ipv4.dnsForward, fwd.ipv6.dnsForward, fwd.ipv4.dnsHost], [
    "10.0.2.3",
    "fd00::3",
    "127.0.0.1",
  ]);
});

Deno.test("parseCommandLine() rejects bad DNS options", () => {
  rejects(["-D", "dns.example"], /^--dns: "dns.example" is not an IPv4 or IPv6 address$/);
  rejects(["-D", "0.0.0.0"], /unspecified/);
  rejects(["-S", "bad..name"], /^--search: "bad..name" is not a valid domain name$/);
  rejects(["-S", "   "], /^--search: " {3}" names no domain/);
  rejects(["--fqdn", "-x.example"], /^--fqdn: "-x.example" is not a valid domain name$/);
  rejects(["--fqdn=-x.example"], /^--fqdn: "-x.example" is not a valid domain name$/);
  rejects(["--fqdn", "a".repeat(64) + ".com"], /is not a valid domain name/);
  rejects(["--dns-forward", "224.0.0.1"], /^--dns-forward: "224.0.0.1" is a multicast address$/);
  rejects(["--dns-host", "nope"], /^--dns-host: "nope" is not an IPv4/);
});

Deno.test("parseCommandLine() parses address mapping options", () => {
  const c = parse("--map-host-loopback", "10.0.2.2", "--map-guest-addr", "fd00::15");
  assertEquals([c.ipv4.mapHostLoopback, c.ipv6.mapHostLoopback], ["10.0.2.2", null]);
  assertEquals([c.ipv4.mapGuestAddr, c.ipv6.mapGuestAddr], [null, "fd00::15"]);
  const none = parse("--map-host-loopback", "none", "--map-guest-addr", "none");
  assertEquals([none.ipv4.mapHostLoopback, none.ipv6.mapHostLoopback], ["none", "none"]);
  assertEquals([none.ipv4.mapGuestAddr, none.ipv6.mapGuestAddr], ["none", "none"]);
  const gw = parse("--no-map-gw");
  assertEquals([gw.ipv4.mapHostLoopback, gw.ipv6.mapHostLoopback], ["none", "none"]);
});

Deno.test("parseCommandLine() rejects bad address mapping options", () => {
  rejects(["--map-host-loopback", "x"], /^--map-host-loopback: "x" is not an IPv4/);
  rejects(["--map-guest-addr", "127.0.0.1"], /^--map-guest-addr: "127.0.0.1" is a loopback/);
});

Deno.test("parseCommandLine() parses protocol switches", () => {
  const c = parse(
    "--no-tcp",
    "--no-udp",
    "--no-icmp",
    "--no-dhcp",
    "--no-dhcpv6",
    "--no-ndp",
    "--no-ra",
  );
  assertEquals(c.protocols, {
    tcp: false,
    udp: false,
    icmp: false,
    dhcp: false,
    dhcpv6: false,
    ndp: false,
    ra: false,
  });
  assertEquals(parse("--no-ra").protocols.ndp, true);
  // passt: --no-icmp implies --no-ndp.
  assertEquals(parse("--no-icmp").protocols.ndp, false);
});

Deno.test("parseCommandLine() parses port forwarding options", () => {
  const c = parse(
    "-t",
    "22",
    "--tcp-ports",
    "8080:80",
    "-u",
    "53",
    "--udp-ports=127.0.0.1/~1-1023",
  );
  assertEquals(c.tcpForwards.specs.map((s) => s.forwards), [
    [{ first: 22, last: 22, targetFirst: 22, targetAddress: null }],
    [{ first: 8080, last: 8080, targetFirst: 80, targetAddress: null }],
  ]);
  assertEquals(c.udpForwards.specs[0].forwards, [
    { first: 53, last: 53, targetFirst: 53, targetAddress: null },
  ]);
  assertEquals(c.udpForwards.specs[1].allNonEphemeral, true);
  assertEquals(parse("-t22").tcpForwards.specs.length, 1);
  assertEquals(parse("--no-tcp", "-t", "none").tcpForwards.specs, []);
});

Deno.test("parseCommandLine() rejects bad port forwarding options", () => {
  rejects(["-t", "70000"], /^--tcp-ports: port 70000 in "70000" is out of range \(1-65535\)$/);
  rejects(["-u", "1-2:3"], /^--udp-ports: target range in "1-2:3" has 1 ports, source has 2$/);
  rejects(["-t", "auto"], /^--tcp-ports: "auto" forwarding exists only in pasta/);
  rejects(["-t", "22", "-t", "22"], /^--tcp-ports: "22" forwards port 22 again/);
  rejects(["--no-tcp", "-t", "22"], /^--tcp-ports cannot be combined with --no-tcp$/);
  rejects(["--no-udp", "-u", "53"], /^--udp-ports cannot be combined with --no-udp$/);
});

Deno.test("parseCommandLine() rejects unknown options and arguments", () => {
  rejects(["--frobnicate"], /^unrecognized option '--frobnicate'$/);
  rejects(["-x"], /^unrecognized option '-x'$/);
  rejects(["stray"], /^unexpected argument 'stray'/);
  rejects(["-f", "--", "stray"], /^unexpected argument 'stray'/);
  rejects(["--print-capabilities=1"], /^--print-capabilities: option takes no argument$/);
});

Deno.test("parseCommandLine() accepts QEMU's -netdev passt argv", () => {
  const c = parse(
    "--vhost-user",
    "--quiet",
    "--mtu",
    "1500",
    "--address",
    "10.0.2.15",
    "--netmask",
    "24",
    "--mac-addr",
    "9a:2b:2c:2d:2e:2f",
    "--gateway",
    "10.0.2.2",
    "--interface",
    "eth0",
    "--outbound",
    "192.0.2.1",
    "--outbound-if4",
    "eth0",
    "--outbound-if6",
    "eth0",
    "--dns",
    "10.0.2.3",
    "--fqdn",
    "vm.example",
    "--no-dhcp-dns",
    "--no-dhcp-search",
    "--map-host-loopback",
    "10.0.2.2",
    "--map-guest-addr",
    "10.0.2.4",
    "--dns-forward",
    "10.0.2.3",
    "--dns-host",
    "127.0.0.1",
    "--no-icmp",
    "--no-dhcpv6",
    "--no-ra",
    "--freebind",
    "--ipv4-only",
    "--search",
    "example.com example.org",
    "--tcp-ports",
    "2222:22",
    "--udp-ports",
    "5353",
    "--pid",
    "/tmp/qemu.pid",
    "--fd",
    "3",
  );
  assertEquals([c.mode, c.fd, c.oneOff, c.pidFile, c.log.level], [
    "vhost-user",
    3,
    true,
    "/tmp/qemu.pid",
    "warn",
  ]);
  assertEquals(c.dns.search, ["example.com", "example.org"]);
});

Deno.test("parseCommandLine() accepts libvirt's argv", () => {
  const c = parse(
    "--one-off",
    "--socket",
    "/run/libvirt/qemu/passt/1-vm-net0.socket",
    "--mac-addr",
    "52:54:00:aa:bb:cc",
    "--mtu",
    "9000",
    "--interface",
    "eth0",
    "--log-file",
    "/tmp/passt.log",
    "--address",
    "192.168.1.10",
    "--netmask",
    "24",
    "--tcp-ports",
    "2022:22",
    "--tcp-ports",
    "127.0.0.1/8080",
    "--udp-ports",
    "5000-5010",
    "--vhost-user",
  );
  assertEquals([c.oneOff, c.socketPath, c.mtu, c.log.file], [
    true,
    "/run/libvirt/qemu/passt/1-vm-net0.socket",
    9000,
    "/tmp/passt.log",
  ]);
  assertEquals(c.tcpForwards.specs[1].bindAddress, "127.0.0.1");
});

Deno.test("parseCommandLine() takes a prefix length with --address", () => {
  const c = parse("-a", "10.0.2.15/24", "-a", "2001:db8::15/64");
  assertEquals([c.ipv4.address, c.ipv4.prefixLength, c.ipv6.address], [
    "10.0.2.15",
    24,
    "2001:db8::15",
  ]);
  rejects(
    ["-a", "10.0.2.15/33"],
    /^--address: "10.0.2.15\/33" has an invalid prefix length \(1-32\)$/,
  );
  rejects(["-a", "10.0.2.15/x"], /has an invalid prefix length/);
  rejects(["-a", "2001:db8::1/129"], /has an invalid prefix length \(1-128\)/);
  rejects(["-a", "10.0.2.15/24", "-n", "16"], /^--netmask: "16" conflicts with the prefix length/);
});

Deno.test("parseCommandLine() parses --hostname", () => {
  assertEquals(parse("-H", "vm1").dns.hostname, "vm1");
  assertEquals(parse("--hostname", "guest-2").dns.hostname, "guest-2");
  rejects(["-H", "a.b"], /^--hostname: "a.b" is not a valid host name/);
  rejects(["-H", "bad_name!"], /is not a valid host name/);
});

Deno.test("parseCommandLine() takes passt's migration options", () => {
  const c = parse(
    "--vhost-user",
    "--repair-path",
    "/run/repair.sock",
    "--migrate-exit",
    "--migrate-no-linger",
  );
  assertEquals(c.migration, {
    repairPath: "/run/repair.sock",
    repairDisabled: false,
    exitAfter: true,
    noLinger: true,
  });
  assertEquals(c.notes.length, 0);
  assertEquals(parse("--vhost-user").migration, {
    repairPath: null,
    repairDisabled: false,
    exitAfter: false,
    noLinger: false,
  });
  // Like passt, they exist only in vhost-user mode ("none" disables the repair socket).
  rejects(["--migrate-exit"], /^--migrate-exit is for vhost-user mode only$/);
  rejects(["--repair-path", "/x"], /^--repair-path is for vhost-user mode only$/);
  assertEquals(parse("--repair-path", "none").migration.repairDisabled, true);
  assertEquals(parse("--vhost-user", "--repair-path", "./none").migration.repairPath, "./none");
});

Deno.test("parseCommandLine() sets the log level by the last of -q, -d and --trace", () => {
  const level = (...args: string[]) => parse(...args).log.level;
  // QEMU's -netdev passt always passes --quiet; param=--debug comes after it.
  assertEquals(level("--quiet", "--mtu", "1500", "--debug"), "debug");
  assertEquals(level("-d", "-q"), "warn");
  assertEquals(level("-q", "--trace"), "trace");
  assertEquals(level("--trace", "-q"), "warn");
  assertEquals(level("--trace", "-q", "-d"), "debug");
  // -d after --trace leaves tracing on, as in passt (it only clears --quiet).
  assertEquals(level("--trace", "-d"), "trace");
  assertEquals(level("-qd"), "debug");
});

Deno.test("parseCommandLine() keeps the last of a repeated option", () => {
  assertEquals(parse("--mtu", "1500", "--mtu", "9000").mtu, 9000);
  assertEquals(parse("-s", "/a", "-s", "/b").socketPath, "/b");
  assertEquals(parse("-s", "/a", "--socket-path", "/b").socketPath, "/b");
  assertEquals(parse("-l", "/a.log", "-l", "/b.log").log.file, "/b.log");
  assertEquals(parse("--log-size", "4096", "--log-size", "8192").log.maxSize, 8192);
  assertEquals(parse("-p", "a.pcap", "--pcap", "b.pcap").pcapFile, "b.pcap");
  assertEquals(parse("-P", "a.pid", "-P", "b.pid").pidFile, "b.pid");
  assertEquals(parse("-i", "eth0", "-i", "eth1").interfaceName, "eth1");
  assertEquals(
    parse("-M", "52:54:00:00:00:01", "-M", "52:54:00:00:00:02").macAddress,
    "52:54:00:00:00:02",
  );
  assertEquals(parse("-H", "a", "-H", "b").dns.hostname, "b");
  assertEquals(parse("--fqdn", "a.example", "--fqdn", "b.example").dns.fqdn, "b.example");
  assertEquals(parse("-n", "16", "-n", "24").ipv4.prefixLength, 24);
  assertEquals(parse("--outbound-if4", "a", "--outbound-if4", "b").ipv4.outboundInterface, "b");
  assertEquals(parse("--runas", "a", "--runas", "b").runas, "b");
  // -s and -F replace each other; -F leaves --one-off set, as in passt.
  const socketLast = parse("-F", "3", "-s", "/x");
  assertEquals([socketLast.fd, socketLast.socketPath, socketLast.oneOff], [null, "/x", true]);
  const fdLast = parse("-s", "/x", "-F", "3");
  assertEquals([fdLast.fd, fdLast.socketPath], [3, null]);
  // -4 and -6: the last wins.
  const v6 = parse("-4", "-6");
  assertEquals([v6.ipv4Enabled, v6.ipv6Enabled], [false, true]);
});

Deno.test("parseCommandLine() keeps the last address per IP version", () => {
  const c = parse(
    "-a",
    "10.0.0.1",
    "-a",
    "2001:db8::1",
    "-a",
    "10.0.0.2",
    "-g",
    "10.0.0.254",
    "-g",
    "10.0.0.253",
    "-o",
    "192.0.2.1",
    "-o",
    "192.0.2.2",
    "--dns-forward",
    "10.0.0.3",
    "--dns-forward",
    "10.0.0.4",
  );
  assertEquals(
    [c.ipv4.address, c.ipv6.address, c.ipv4.gateway, c.ipv4.outbound, c.ipv4.dnsForward],
    ["10.0.0.2", "2001:db8::1", "10.0.0.253", "192.0.2.2", "10.0.0.4"],
  );
});

Deno.test("parseCommandLine() adds up -t, -u, -D and -S; 'none' clears -D and -S", () => {
  const c = parse("-t", "22", "-t", "80", "-u", "53", "-u", "123");
  assertEquals(c.tcpForwards.specs.map((s) => s.text), ["22", "80"]);
  assertEquals(c.udpForwards.specs.map((s) => s.text), ["53", "123"]);
  assertEquals(parse("-D", "1.1.1.1", "-D", "8.8.8.8").dns.servers, ["1.1.1.1", "8.8.8.8"]);
  assertEquals(parse("-D", "1.1.1.1", "-D", "none").dns.servers, []);
  assertEquals(parse("-D", "none", "-D", "1.1.1.1").dns.servers, ["1.1.1.1"]);
  assertEquals(parse("-S", "a.example", "-S", "b.example c.example").dns.search, [
    "a.example",
    "b.example",
    "c.example",
  ]);
  assertEquals(parse("-S", "a.example", "-S", "none").dns.search, []);
  assertEquals(parse("-t", "none", "-t", "22").tcpForwards.specs.length, 1);
  rejects(["-t", "22", "-t", "none"], /^--tcp-ports: "none" conflicts with "22" given before it$/);
});

Deno.test("parseCommandLine() takes abbreviations of long options as getopt_long() does", () => {
  assertEquals(parse("--mt", "1500").mtu, 1500);
  assertEquals(parse("--deb").log.level, "debug");
  assertEquals(parse("--vh").mode, "vhost-user");
  assertEquals(parse("--sock", "/tmp/s").socketPath, "/tmp/s");
  assertEquals(parse("--int", "eth0").interfaceName, "eth0");
  assertEquals(parse("--no-dhcp").protocols.dhcp, false);
  assertEquals(parse("--no-dhcpv").protocols.dhcpv6, false);
  assertEquals(parse("--tcp-p", "22").tcpForwards.specs.length, 1);
  // pasta's options count for ambiguity, as in passt's table.
  rejects(
    ["--tcp", "22"],
    /^option '--tcp' is ambiguous; possibilities: '--tcp-ports' '--tcp-ns'$/,
  );
  rejects(
    ["--no-d"],
    /^option '--no-d' is ambiguous; possibilities: '--no-dhcp' '--no-dhcpv6' '--no-dhcp-dns' '--no-dhcp-search'$/,
  );
  rejects(["--v"], /^option '--v' is ambiguous; possibilities: '--version' '--vhost-user'$/);
  rejects(["--internal-l=5"], /^unrecognized option '--internal-l'$/);
});

Deno.test("parseCommandLine() accepts every passt-mode option of passt 2026", () => {
  const c = parse(
    ...["-f", "-e", "--stats", "5", "-c", "/tmp/pesto.sock", "--chroot-fallback", "--no-splice"],
    ...["--mtu", "0", "--freebind", "--fqdn", "vm.example"],
  );
  assertEquals([c.statsDelay, c.mtu, c.freebind, c.dns.fqdn], [5, 0, true, "vm.example"]);
  assertEquals(c.notes.map((n) => n.level), ["warn", "debug", "debug"]);
  assertTrue(c.notes[0].message.startsWith("--conf-path /tmp/pesto.sock ignored"));
  assertEquals(parse("-f", "--stats", "0").statsDelay, null);
  rejects(["--stats", "5"], /^--stats: statistics are shown only in the foreground/);
  rejects(["-f", "--stats", "x"], /^--stats: "x" is not a valid delay in seconds/);
});

Deno.test("parseCommandLine() refuses pasta-only options, as passt does", () => {
  for (
    const args of [
      ["--netns", "x"],
      ["-T", "22"],
      ["-U", "53"],
      ["-I", "eth0"],
      ["--config-net"],
      ["--splice-only"],
      ["--dhcp-dns"],
    ]
  ) {
    rejects(args, /is for pasta mode only/);
  }
});

Deno.test("parseCommandLine() ignores, with a warning, values of a disabled IP version", () => {
  const c = parse("-4", "-a", "2001:db8::1", "-g", "10.0.0.1");
  assertEquals([c.ipv6Enabled, c.ipv6.address, c.ipv4.gateway], [false, null, "10.0.0.1"]);
  assertEquals(c.notes, [{
    level: "warn",
    message: "--address 2001:db8::1 ignored: IPv6 is disabled (--ipv4-only)",
  }]);
  rejects(
    ["-4", "-t", "::1/22"],
    /^--tcp-ports: "::1\/22" binds an IPv6 address, but IPv6 is disabled$/,
  );
});

Deno.test("parseCommandLine() lets --map-host-loopback ADDR win over --no-map-gw's default", () => {
  const c = parse("--no-map-gw", "--map-host-loopback", "10.0.2.2");
  assertEquals([c.ipv4.mapHostLoopback, c.ipv6.mapHostLoopback], ["10.0.2.2", "none"]);
});

Deno.test("parseCommandLine() parses forwarding target addresses in -t/-u specs", () => {
  const c = parse("-t", "0.0.0.0/5000:192.0.2.5/6000", "-u", "127.0.0.6/all:192.0.2.6");
  assertEquals(c.tcpForwards.specs[0].forwards, [
    { first: 5000, last: 5000, targetFirst: 6000, targetAddress: "192.0.2.5" },
  ]);
  assertEquals(c.udpForwards.specs[0].allTargetAddress, "192.0.2.6");
  rejects(["-t", "22:192.0.2.5"], /forwards both IP versions to the IPv4 address 192.0.2.5/);
  // With IPv4 alone, a spec without a bind address listens on IPv4 only: fine.
  assertEquals(parse("-4", "-t", "22:192.0.2.5").tcpForwards.specs.length, 1);
});
