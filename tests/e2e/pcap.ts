/**
 * Reads a backend's pcap capture with tshark (Wireshark's dissectors, independent of
 * tpasst's own code): which DHCP, DHCPv6 and router advertisement messages it holds and
 * which frames tshark flags as malformed.
 *
 * @module
 */

/** What {@link pcapSummary} found in a capture. */
export interface PcapSummary {
  /** Frames in the file. */
  readonly frames: number;
  /** DHCP message types (option 53: 1 Discover, 2 Offer, 3 Request, 5 ACK), in order. */
  readonly dhcpTypes: number[];
  /** DHCPv6 message types (1 Solicit, 2 Advertise, 3 Request, 7 Reply), in order. */
  readonly dhcpv6Types: number[];
  /** ICMPv6 Router Advertisements (type 134). */
  readonly routerAdvertisements: number;
  /** tshark's one-line summaries of frames matching `_ws.malformed`. */
  readonly malformed: string[];
}

/** ICMPv6 type of a Router Advertisement (RFC 4861 section 4.2). */
const ICMPV6_ROUTER_ADVERTISEMENT = 134;

/** tshark Decode-As options: TCP and UDP payloads on ports 1024 and up are plain data. */
const PAYLOADS_AS_DATA = ["-d", "tcp.port==1024-65535,data", "-d", "udp.port==1024-65535,data"];

async function tshark(args: string[]): Promise<string[]> {
  const output = await new Deno.Command("tshark", {
    args: ["-n", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`tshark ${args.join(" ")} failed: ${stderr}`);
  return new TextDecoder().decode(output.stdout).split("\n").filter((l) => l.trim() !== "");
}

/** Decodes `path` with tshark and summarises it. */
export async function pcapSummary(path: string): Promise<PcapSummary> {
  const frames = (await tshark(["-r", path, "-T", "fields", "-e", "frame.number"])).length;
  const rows = await tshark([
    "-r",
    path,
    "-Y",
    `dhcp || dhcpv6 || icmpv6.type == ${ICMPV6_ROUTER_ADVERTISEMENT}`,
    "-T",
    "fields",
    "-E",
    "separator=/t",
    "-e",
    "dhcp.option.dhcp",
    "-e",
    "dhcpv6.msgtype",
    "-e",
    "icmpv6.type",
  ]);
  const dhcpTypes: number[] = [];
  const dhcpv6Types: number[] = [];
  let routerAdvertisements = 0;
  for (const row of rows) {
    const [dhcp, dhcpv6, icmpv6] = row.split("\t");
    if (dhcp) dhcpTypes.push(Number(dhcp));
    if (dhcpv6) dhcpv6Types.push(Number(dhcpv6.split(",")[0]));
    if (icmpv6 && icmpv6.split(",").map(Number).includes(ICMPV6_ROUTER_ADVERTISEMENT)) {
      routerAdvertisements++;
    }
  }
  // The guests' own payloads (bulk data, echoes) go to random ports, which tshark may
  // take for a protocol registered there (EtherCAT on 34980...) and call malformed:
  // payloads on unprivileged ports are read as plain data; DHCP, DHCPv6 and DNS keep
  // their decoders.
  const malformed = await tshark([
    "-r",
    path,
    ...PAYLOADS_AS_DATA,
    "-Y",
    "_ws.malformed",
  ]);
  return { frames, dhcpTypes, dhcpv6Types, routerAdvertisements, malformed };
}
