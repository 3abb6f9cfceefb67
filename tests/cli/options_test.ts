import { assertEquals, assertMatch, assertTrue } from "../support/assert.ts";
import { runTpasst } from "./cli_helpers.ts";

Deno.test("bin/tpasst rejects a bad value with one line naming the option, exit 1", async () => {
  const { code, stdout, stderr } = await runTpasst(["--mtu", "70000"]);
  assertEquals(code, 1);
  assertEquals(stdout, "");
  assertEquals(
    stderr,
    `tpasst: --mtu: "70000" is not a valid MTU (0 for none, or 68-65520)\n` +
      "Try 'tpasst --help' for more information.\n",
  );
});

Deno.test("bin/tpasst rejects an unknown option and a malformed port spec, exit 1", async () => {
  const unknown = await runTpasst(["-f", "--no-such-option"]);
  assertEquals(unknown.code, 1);
  assertEquals(unknown.stderr.split("\n")[0], "tpasst: unrecognized option '--no-such-option'");
  const ports = await runTpasst(["-t", "22,80-70"]);
  assertEquals(ports.code, 1);
  assertEquals(
    ports.stderr.split("\n")[0],
    `tpasst: --tcp-ports: range "80-70" in "80-70" ends before it starts`,
  );
  assertEquals(ports.stderr.split("\n").length, 3); // two lines and the final newline
});

Deno.test("bin/tpasst --print-capabilities prints the vhost-user JSON, exit 0", async () => {
  const { code, stdout, stderr } = await runTpasst(["--print-capabilities"]);
  assertEquals([code, stderr], [0, ""]);
  assertEquals(JSON.parse(stdout), { type: "net" });
});

Deno.test("bin/tpasst --version prints its version, exit 0", async () => {
  const { code, stdout } = await runTpasst(["--version"]);
  assertEquals(code, 0);
  assertMatch(stdout, /^tpasst [0-9]+\.[0-9]+\.[0-9]+\n$/);
});

Deno.test("bin/tpasst --help reads like a man page and documents every option", async () => {
  const { code, stdout } = await runTpasst(["--help"]);
  assertEquals(code, 0);
  for (const section of ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"]) {
    assertMatch(stdout, new RegExp(`^${section}$`, "m"));
  }
  const options = [
    "--socket",
    "--vhost-user",
    "--fd",
    "--one-off",
    "--foreground",
    "--quiet",
    "--debug",
    "--trace",
    "--log-file",
    "--log-size",
    "--pid",
    "--print-capabilities",
    "--mtu",
    "--address",
    "--netmask",
    "--gateway",
    "--mac-addr",
    "--interface",
    "--dns",
    "--search",
    "--fqdn",
    "--no-dhcp-dns",
    "--no-dhcp-search",
    "--no-dhcp",
    "--no-dhcpv6",
    "--no-ndp",
    "--no-ra",
    "--no-tcp",
    "--no-udp",
    "--no-icmp",
    "--tcp-ports",
    "--udp-ports",
    "--pcap",
    "--map-host-loopback",
    "--map-guest-addr",
    "--no-map-gw",
    "--dns-forward",
    "--dns-host",
    "--outbound",
    "--outbound-if4",
    "--outbound-if6",
    "--ipv4-only",
    "--ipv6-only",
    "--freebind",
    "--runas",
    "--help",
    "--version",
    "--stats",
    "--conf-path",
    "--chroot-fallback",
    "--no-splice",
    "--stderr",
    "--repair-path",
    "--migrate-exit",
    "--migrate-no-linger",
  ];
  const missing = options.filter((o) => !new RegExp(`${o}\\b`).test(stdout));
  assertEquals(missing, []);
  assertTrue(stdout.split("\n").every((line) => line.length <= 100), "a help line is too long");
});

Deno.test("bin/tpasst names the candidates of an ambiguous abbreviation and accepts a unique one", async () => {
  const ambiguous = await runTpasst(["--no-d"]);
  assertEquals(ambiguous.code, 1);
  assertEquals(
    ambiguous.stderr.split("\n")[0],
    "tpasst: option '--no-d' is ambiguous; possibilities: '--no-dhcp' '--no-dhcpv6' " +
      "'--no-dhcp-dns' '--no-dhcp-search'",
  );
  const unique = await runTpasst(["--vers"]);
  assertEquals(unique.code, 0);
  assertMatch(unique.stdout, /^tpasst /);
  const pasta = await runTpasst(["--netns", "x"]);
  assertEquals(pasta.code, 1);
  assertEquals(
    pasta.stderr.split("\n")[0],
    "tpasst: --netns is for pasta mode only (tpasst works like passt)",
  );
});
