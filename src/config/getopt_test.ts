import { assertEquals, assertThrows, assertTrue } from "../../tests/support/assert.ts";
import { GetoptError, getoptLong, type OptionDefinition } from "./getopt.ts";

const TABLE: OptionDefinition[] = [
  { name: "debug", short: "d", argument: false },
  { name: "dns", short: "D", argument: true },
  { name: "dns-forward", argument: true },
  { name: "foreground", short: "f", argument: false },
  { name: "mtu", short: "m", argument: true },
  { name: "no-dhcp", argument: false },
  { name: "no-dhcpv6", argument: false },
  { name: "no-dhcp-dns", argument: false },
  { name: "socket", aliases: ["socket-path"], short: "s", argument: true },
  { name: "interface", short: "i", argument: true },
  { name: "internal-fd", argument: true, exactOnly: true },
  { name: "help", short: "h", argument: false },
];

/** Asserts that tokenizing `args` fails with a GetoptError whose message contains `text`. */
function refuses(args: string[], text: string): void {
  const error = assertThrows(() => getoptLong(args, TABLE));
  assertTrue(error instanceof GetoptError, `${args.join(" ")}: ${error}`);
  assertTrue(error.message.includes(text), `${args.join(" ")}: "${error.message}" lacks "${text}"`);
}

function names(args: string[]): string[] {
  return getoptLong(args, TABLE).options.map((o) => `${o.name}=${o.value ?? ""}`);
}

Deno.test("getoptLong() keeps every occurrence in order, with its value", () => {
  assertEquals(names(["--mtu", "1500", "-m", "9000", "--mtu=0", "-m68"]), [
    "mtu=1500",
    "mtu=9000",
    "mtu=0",
    "mtu=68",
  ]);
});

Deno.test("getoptLong() splits clusters of short options; an argument ends the cluster", () => {
  assertEquals(names(["-fd"]), ["foreground=", "debug="]);
  assertEquals(names(["-fm1500", "-dD", "1.1.1.1"]), [
    "foreground=",
    "mtu=1500",
    "debug=",
    "dns=1.1.1.1",
  ]);
});

Deno.test("getoptLong() takes the next word as a required argument, whatever it looks like", () => {
  assertEquals(names(["--mtu", "-1"]), ["mtu=-1"]);
  assertEquals(names(["-s", "--debug"]), ["socket=--debug"]);
});

Deno.test("getoptLong() resolves unique prefixes; an exact name wins over longer ones", () => {
  assertEquals(names(["--deb", "--fore", "--mt", "9000"]), ["debug=", "foreground=", "mtu=9000"]);
  assertEquals(names(["--no-dhcp"]), ["no-dhcp="]);
  assertEquals(names(["--dns", "1.1.1.1"]), ["dns=1.1.1.1"]);
  assertEquals(names(["--no-dhcpv"]), ["no-dhcpv6="]);
  // Two spellings of the same option are not ambiguous.
  assertEquals(names(["--sock", "/tmp/s", "--socket-p=/tmp/t"]), [
    "socket=/tmp/s",
    "socket=/tmp/t",
  ]);
  // Internal options are never reached by an abbreviation.
  assertEquals(names(["--int", "eth0", "--internal-fd", "4"]), ["interface=eth0", "internal-fd=4"]);
});

Deno.test("getoptLong() names every candidate of an ambiguous prefix", () => {
  refuses(
    ["--no-d"],
    "option '--no-d' is ambiguous; possibilities: '--no-dhcp' '--no-dhcpv6' '--no-dhcp-dns'",
  );
  refuses(["--d"], "'--debug' '--dns' '--dns-forward'");
});

Deno.test("getoptLong() refuses unknown options and misplaced arguments, naming them", () => {
  refuses(["--bogus"], "unrecognized option '--bogus'");
  refuses(["--internal"], "unrecognized option");
  refuses(["-x"], "unrecognized option '-x'");
  refuses(["-fx"], "unrecognized option '-x'");
  refuses(["--mtu"], "--mtu: option requires");
  refuses(["-dm"], "--mtu: option requires");
  refuses(["--deb=1"], "--debug: option takes no");
});

Deno.test("getoptLong() stops at '--', at the first operand and after a stop option", () => {
  assertEquals(getoptLong(["-d", "--", "-f"], TABLE).operands, ["-f"]);
  const stopped = getoptLong(["-d", "stray", "-f"], TABLE);
  assertEquals([stopped.options.length, stopped.operands], [1, ["stray", "-f"]]);
  assertEquals(getoptLong(["-", "-d"], TABLE).operands, ["-", "-d"]);
  const help = getoptLong(["-d", "--he", "--bogus"], TABLE, new Set(["help"]));
  assertEquals(help.options.map((o) => o.name), ["debug", "help"]);
  assertEquals(help.options[1].spelling, "--he");
});
