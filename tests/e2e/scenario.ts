/**
 * The end-to-end scenarios: one guest boot per backend runs a shell script (built here)
 * that exercises DHCP, SLAAC, ping, HTTP, DNS, UDP and TCP both ways, how TCP connections
 * end (RST each way, a refused connect, half-close each way), bulk transfers and iperf3, printing `TPASST-MARK` results; {@link E2eSession} starts the host-side peers,
 * the backend and QEMU, plays the host's part (connecting to forwarded guest ports) and
 * exposes the results to the tests.
 *
 * @module
 */

import {
  type BackendKind,
  type BackendOptions,
  startBackend,
  type StartedBackend,
} from "./backends.ts";
import { type DnsResponder, startDnsResponder } from "./dns_responder.ts";
import {
  type ConnectionEnd,
  freePort,
  freeTcpUdpPort,
  type HttpServer,
  type IperfServer,
  startEndWatcher,
  startHalfCloser,
  startHttpServer,
  startIperfServer,
  startReplyAfterEof,
  startResetter,
  startTcpSink,
  startUdpEcho,
  tcpExchange,
  type TcpPeer,
  type TcpSink,
  type UdpEcho,
  udpRequest,
} from "./host_services.ts";
import { type PortForward, QemuGuest } from "./qemu.ts";

/** Scenario phases, in the order the guest runs them. */
export const PHASES = [
  "dhcp",
  "slaac",
  "dhcpv6",
  "ping",
  "ping6",
  "ping-host",
  "http",
  "http6",
  "dns",
  "udp-out",
  "tcp-in",
  "udp-in",
  "tcp-rst-out",
  "tcp-rst-in",
  "tcp-refused",
  "tcp-half-close",
  "bulk-up",
  "bulk-down",
  "iperf",
] as const;

/** One of {@link PHASES}. */
export type Phase = typeof PHASES[number];

/** Name the DNS responder answers and its address (TEST-NET-2, never contacted). */
export const DNS_TEST_NAME = "e2e.tpasst.test";
export const DNS_TEST_ADDRESS = "198.51.100.7";
/**
 * DNS servers tpasst announces (DHCP, DHCPv6): documentation addresses the guest only
 * reports and never queries (its resolv.conf is never written).
 */
export const TEST_DNS_SERVERS = ["198.51.100.53", "2001:db8::53"] as const;
/**
 * tpasst's `--map-guest-addr` in the scenarios: guest traffic to it reaches the host's
 * own address (the one the guest was given), which the host's kernel answers locally.
 */
export const TEST_MAP_GUEST_ADDR4 = "198.51.100.1";
/** Page the guest serves on its forwarded TCP port (written by guest/build.sh). */
export const GUEST_PAGE = "tpasst guest page\n";
/** Ports inside the guest. */
export const GUEST_TCP_PORT = 8080;
export const GUEST_UDP_PORT = 8081;
/** What the host sends to the guest's TCP and UDP ports. */
export const HOST_TCP_MESSAGE = "hello-guest-from-host\n";
export const HOST_UDP_MESSAGE = "udp-hello-from-host";
/** What the guest sends to the host's UDP echo. */
export const GUEST_UDP_MESSAGE = "udp-hello-from-guest";
/** What the guest sends before half-closing (the host answers `reply:` + it). */
export const GUEST_HALF_CLOSE_MESSAGE = "request-from-guest";
/** What the host sends before half-closing (the guest answers `reply:` + it). */
export const HOST_HALF_CLOSE_MESSAGE = "request-from-host";

/** Longest wait for the guest to get to a phase the host takes part in. */
const READY_TIMEOUT_MS = 600_000;
/** Tries at starting a session's peers, backend and QEMU before the error is thrown. */
const START_ATTEMPTS = 3;
/** Longest wait for the guest's first serial line, which shows slirp's forwards were set up. */
const FIRST_SERIAL_LINE_TIMEOUT_MS = 60_000;

/** Parameters of one run. */
export interface ScenarioOptions {
  /** Phases to run (default: all). */
  readonly phases?: readonly Phase[];
  /** Bytes per bulk transfer (default 100 MiB). */
  readonly bulkBytes?: number;
  /** Seconds per iperf3 direction (default 3). */
  readonly iperfSeconds?: number;
  /** Serial lines, as they arrive. */
  readonly onLine?: (line: string) => void;
  /** Extra backend options (device options, pcap file, --one-off...). */
  readonly backend?: Omit<BackendOptions, "forwards">;
  /**
   * The guest sets this MTU on its interface after DHCP, whatever the lease said: a
   * guest with a fixed MTU that the backend does not know about.
   */
  readonly guestMtu?: number;
}

/** Host-side ports and addresses the guest script needs. */
export interface ScenarioPorts {
  readonly http: number;
  readonly dns: number;
  readonly udpEcho: number;
  readonly sink: number;
  readonly iperf: number;
  readonly hostLoopback6: string | null;
  /** Guest-side address that reaches the host's own address (null: none). */
  readonly mapGuestAddr4?: string | null;
  /** Host peers of the TCP connection-end phases (absent: those phases are left out). */
  readonly tcpEnds?: TcpEndPorts;
}

/** Host-side ports of the TCP connection-end phases (all on 127.0.0.1). */
export interface TcpEndPorts {
  /** Records whether a connection ended by FIN or RST ({@link startEndWatcher}). */
  readonly endWatcher: number;
  /** Resets each connection after its first line ({@link startResetter}). */
  readonly resetter: number;
  /** Answers after the client's half-close ({@link startReplyAfterEof}). */
  readonly replyAfterEof: number;
  /** Half-closes first, then reads the client's answer ({@link startHalfCloser}). */
  readonly halfCloser: number;
  /** A port nobody listens on. */
  readonly closed: number;
}

/**
 * Builds the guest's shell script for `phases`. The script never fails early: every phase
 * prints its result or `<phase>-failed <reason>` and the next phase runs.
 */
export function buildGuestScript(
  phases: readonly Phase[],
  ports: ScenarioPorts,
  bulkBytes: number,
  iperfSeconds: number,
  queuePairs = 1,
  guestMtu: number | null = null,
): string {
  const on = new Set(phases);
  const lines = [
    "# generated by tests/e2e/scenario.ts",
    'mark() { echo "TPASST-MARK $*"; }',
    `bulk_bytes=${bulkBytes}`,
    "",
  ];
  if (queuePairs > 1) {
    lines.push(
      "# channels: every queue pair in use (virtio-net enables one per vCPU, here 1)",
      `if probe channels eth0 ${queuePairs} >/tmp/channels.log 2>&1;`,
      'then mark channels "$(cat /tmp/channels.log)";',
      'else mark channels-failed "$(tail -n 1 /tmp/channels.log)"; fi',
      "",
    );
  }
  lines.push(
    "# dhcp: lease via udhcpc; udhcpc.sh prints dhcp-* marks and saves the router",
    "udhcpc -i eth0 -f -q -n -t 5 -T 3 -s /etc/udhcpc.sh 2>/tmp/udhcpc.log ||",
    '  mark dhcp-failed "$(tail -n 1 /tmp/udhcpc.log)"',
    "gw=$(cat /tmp/router 2>/dev/null)",
    'if [ -z "$gw" ]; then mark error no-router; exit 1; fi',
  );
  if (guestMtu !== null) {
    lines.push(
      "",
      "# a fixed MTU: the guest ignores the one of its lease",
      `ip link set eth0 mtu ${guestMtu} || mark error guest-mtu`,
    );
  }
  if (on.has("slaac")) {
    lines.push(
      "",
      "# slaac: wait for a non-link-local, non-tentative IPv6 address from the RA",
      "# (slirp's prefix fec0::/64 has site scope, so no 'scope global' filter)",
      "i=0; addr6=''",
      'while [ $i -lt 40 ] && [ -z "$addr6" ]; do',
      "  addr6=$(ip -6 addr show dev eth0 | grep inet6 | grep -v -e tentative -e ' fe80:' |",
      "    awk '{print $2}' | head -n 1)",
      '  [ -n "$addr6" ] || sleep 0.25; i=$((i + 1))',
      "done",
      'if [ -n "$addr6" ]; then mark slaac-addr "$addr6"; else mark slaac-failed none; fi',
      "mark ipv6-router \"$(ip -6 route show default | awk '{print $3; exit}')\"",
    );
  }
  if (on.has("dhcpv6")) {
    lines.push(
      "",
      "# dhcpv6: SOLICIT/ADVERTISE/REQUEST/REPLY by probe (busybox-static has no udhcpc6)",
      "if probe dhcpv6 eth0 20 >/tmp/dhcpv6.log 2>&1; then",
      "  mark dhcpv6-addr \"$(sed -n 's/^addr //p' /tmp/dhcpv6.log)\"",
      "  mark dhcpv6-dns \"$(sed -n 's/^dns *//p' /tmp/dhcpv6.log)\"",
      'else mark dhcpv6-failed "$(tail -n 1 /tmp/dhcpv6.log)"; fi',
    );
  }
  const ping = (phase: string, mark: string, target: string) =>
    lines.push(
      "",
      `# ${phase}: ICMP echo to ${target}`,
      `if ping -c 2 -W 3 ${target} >/tmp/${phase}.log 2>&1; then mark ${mark} ok;`,
      `else mark ${phase}-failed "$(tail -n 1 /tmp/${phase}.log)"; fi`,
    );
  if (on.has("ping")) ping("ping", "ping-gw", '"$gw"');
  if (on.has("ping6") && ports.hostLoopback6 !== null) {
    ping("ping6", "ping6-gw", ports.hostLoopback6);
  }
  if (on.has("ping-host") && ports.mapGuestAddr4) {
    ping("ping-host", "ping-host", ports.mapGuestAddr4);
  }
  if (on.has("http")) {
    lines.push(
      "",
      "# http: fetch the host's page through the gateway address (host loopback);",
      "# busybox-static's wget crashes with -T: bound it with timeout instead",
      `if timeout 30 wget -q -O /tmp/hello "http://$gw:${ports.http}/hello" 2>/tmp/wget.log; then`,
      '  mark http-get "$(cat /tmp/hello)"',
      'else mark http-failed "$(tail -n 1 /tmp/wget.log)"; fi',
    );
  }
  if (on.has("http6") && ports.hostLoopback6 !== null) {
    lines.push(
      "",
      "# http6: the same page over IPv6 (host ::1 through the backend's mapped address)",
      `if timeout 30 wget -q -O /tmp/hello6 "http://[${ports.hostLoopback6}]:${ports.http}/hello" 2>/tmp/wget6.log; then`,
      '  mark http6-get "$(cat /tmp/hello6)"',
      'else mark http6-failed "$(tail -n 1 /tmp/wget6.log)"; fi',
    );
  }
  if (on.has("dns")) {
    lines.push(
      "",
      "# dns: A query to the test's responder on host loopback, never anything else",
      `nslookup -timeout=3 -retry=2 ${DNS_TEST_NAME} "$gw:${ports.dns}" >/tmp/dns.log 2>&1`,
      `if grep -q "^Address: ${DNS_TEST_ADDRESS}" /tmp/dns.log; then mark dns-a ${DNS_TEST_ADDRESS};`,
      'else mark dns-failed "$(tail -n 1 /tmp/dns.log)"; fi',
    );
  }
  if (on.has("udp-out")) {
    lines.push(
      "",
      "# udp-out: datagram to the host's echo server, answer back",
      `reply=$(probe udp-send "$gw" ${ports.udpEcho} ${GUEST_UDP_MESSAGE} 5 2>&1 ||`,
      `  probe udp-send "$gw" ${ports.udpEcho} ${GUEST_UDP_MESSAGE} 5 2>&1)`,
      'mark udp-out "$reply"',
    );
  }
  if (on.has("tcp-in")) {
    lines.push(
      "",
      "# tcp-in: the host connects to a forwarded port and sends a line; we send our page",
      `timeout 30 nc -l -p ${GUEST_TCP_PORT} </www/index.html >/tmp/tcpin 2>&1 &`,
      "pid=$!; sleep 0.3; mark ready tcp-in",
      'wait $pid; mark tcp-in "$(cat /tmp/tcpin)"',
    );
  }
  if (on.has("udp-in")) {
    lines.push(
      "",
      "# udp-in: the host sends a datagram to a forwarded port, we echo it",
      `probe udp-echo ${GUEST_UDP_PORT} 1 30 >/tmp/udpin 2>&1 &`,
      "pid=$!; sleep 0.3; mark ready udp-in",
      'wait $pid; mark udp-in "$(cat /tmp/udpin)"',
    );
  }
  const ends = ports.tcpEnds;
  if (ends && TCP_END_PHASES.some((p) => on.has(p))) {
    lines.push(
      "",
      "# tcp-*: probe's last output line (its result, or why it failed)",
      'tcp_probe() { out=$(timeout 60 probe "$@" 2>&1) || out="$out (exit $?)"; echo "$out" | tail -n 1; }',
    );
  }
  if (ends && on.has("tcp-rst-out")) {
    lines.push(
      "",
      "# tcp-rst-out: reset a connection to the host's watcher (SO_LINGER 0); it records the end",
      `mark tcp-rst-out "$(tcp_probe tcp-reset "$gw" ${ends.endWatcher})"`,
    );
  }
  if (ends && on.has("tcp-rst-in")) {
    lines.push(
      "",
      "# tcp-rst-in: the host's peer resets the connection after our line: read ECONNRESET",
      `mark tcp-rst-in "$(tcp_probe tcp-wait-end "$gw" ${ends.resetter})"`,
    );
  }
  if (ends && on.has("tcp-refused")) {
    lines.push(
      "",
      "# tcp-refused: nobody listens on this host port: connect gets ECONNREFUSED",
      `mark tcp-refused "$(tcp_probe tcp-connect "$gw" ${ends.closed})"`,
    );
  }
  if (ends && on.has("tcp-half-close")) {
    lines.push(
      "",
      "# tcp-half-close: we shut down writing and still read the host's reply; then the host",
      "# shuts down writing first and still reads ours",
      `mark tcp-half-close-guest "$(tcp_probe tcp-half-close "$gw" ${ends.replyAfterEof} ${GUEST_HALF_CLOSE_MESSAGE})"`,
      `mark tcp-half-close-host "$(tcp_probe tcp-reply-after-eof "$gw" ${ends.halfCloser})"`,
    );
  }
  if (on.has("bulk-up")) {
    lines.push(
      "",
      "# bulk-up: stream pseudo-random bytes to the host's sink; busybox sha256sum hashes",
      "# the copy probe writes to a fifo (busybox nc is too slow for 100 MB under TCG)",
      "mkfifo /tmp/up.fifo",
      "sha256sum </tmp/up.fifo >/tmp/up.sum &",
      "sum_pid=$!",
      "start=$(cut -d' ' -f1 /proc/uptime)",
      `if ! timeout 150 probe tcp-send "$gw" ${ports.sink} "$bulk_bytes" /tmp/up.fifo 2>/tmp/up.log; then`,
      "  timeout 5 sh -c ': >/tmp/up.fifo' # unblock sha256sum if probe never opened the fifo",
      "  wait $sum_pid",
      '  mark bulk-up-failed "probe tcp-send: $(tail -n 1 /tmp/up.log)"',
      "fi",
      "wait $sum_pid",
      "end=$(cut -d' ' -f1 /proc/uptime)",
      "mark bulk-up-sha256 \"$(cut -d' ' -f1 /tmp/up.sum)\"",
      'mark bulk-up-seconds "$(echo "$end $start" | awk \'{print $1 - $2}\')"',
    );
  }
  if (on.has("bulk-down")) {
    lines.push(
      "",
      "# bulk-down: fetch pseudo-random bytes from the host and hash them",
      "start=$(cut -d' ' -f1 /proc/uptime)",
      `timeout 150 wget -q -O - "http://$gw:${ports.http}/bulk?bytes=$bulk_bytes" 2>/tmp/bulk.log |`,
      "  sha256sum >/tmp/down.sum",
      "end=$(cut -d' ' -f1 /proc/uptime)",
      "mark bulk-down-sha256 \"$(cut -d' ' -f1 /tmp/down.sum)\"",
      'mark bulk-down-seconds "$(echo "$end $start" | awk \'{print $1 - $2}\')"',
    );
  }
  if (on.has("iperf")) {
    lines.push(
      "",
      "# iperf: guest client against the host's iperf3 -s on loopback, both directions",
      "iperf_mbps() { awk '/receiver/ {print $(NF-2); found=1} END {if (!found) print \"failed\"}'; }",
      `up=$(timeout ${
        iperfSeconds + 30
      } iperf3 -c "$gw" -p ${ports.iperf} -t ${iperfSeconds} -f m 2>&1 | iperf_mbps)`,
      'mark iperf-up-mbps "$up"',
      `down=$(timeout ${
        iperfSeconds + 30
      } iperf3 -c "$gw" -p ${ports.iperf} -t ${iperfSeconds} -f m -R 2>&1 | iperf_mbps)`,
      'mark iperf-down-mbps "$down"',
    );
  }
  lines.push(
    "",
    "# link: the interface's MTU, and what the guest's driver and TCP dropped on receive",
    'mark link-mtu "$(cat /sys/class/net/eth0/mtu)"',
    "s=/sys/class/net/eth0/statistics",
    'mark link-rx-drops "$(cat $s/rx_errors) $(cat $s/rx_dropped) $(cat $s/rx_length_errors)"',
    "mark tcp-in-errors \"$(awk '/^Tcp:/ { n++; if (n == 1) { for (i = 1; i <= NF; i++) {" +
      ' if ($i == "InErrs") e = i; if ($i == "InCsumErrors") c = i } }' +
      " else print $e, $c }' /proc/net/snmp)\"",
    "",
    "exit 0",
    "",
  );
  return lines.join("\n");
}

/** The phases about how TCP connections end. */
export const TCP_END_PHASES: readonly Phase[] = [
  "tcp-rst-out",
  "tcp-rst-in",
  "tcp-refused",
  "tcp-half-close",
];

/** The running host peers of the TCP connection-end phases. */
export interface TcpEndPeers {
  readonly ports: TcpEndPorts;
  readonly endWatcher: TcpPeer<ConnectionEnd>;
  readonly resetter: TcpPeer<string>;
  readonly replyAfterEof: TcpPeer<string>;
  readonly halfCloser: TcpPeer<string>;
  close(): void;
}

/** Starts the host peers of the TCP connection-end phases on 127.0.0.1. */
export function startTcpEndPeers(): TcpEndPeers {
  const endWatcher = startEndWatcher();
  const resetter = startResetter();
  const replyAfterEof = startReplyAfterEof();
  const halfCloser = startHalfCloser(HOST_HALF_CLOSE_MESSAGE);
  return {
    ports: {
      endWatcher: endWatcher.port,
      resetter: resetter.port,
      replyAfterEof: replyAfterEof.port,
      halfCloser: halfCloser.port,
      closed: freePort(),
    },
    endWatcher,
    resetter,
    replyAfterEof,
    halfCloser,
    close() {
      for (const peer of [endWatcher, resetter, replyAfterEof, halfCloser]) peer.close();
    },
  };
}

/** One booted guest against one backend, with the host's peers running. */
export class E2eSession {
  readonly backend: StartedBackend;
  readonly guest: QemuGuest;
  readonly http: HttpServer;
  readonly dns: DnsResponder;
  readonly udpEcho: UdpEcho;
  readonly sink: TcpSink;
  readonly iperf: IperfServer | null;
  /** Host peers of the TCP connection-end phases (null: none of them runs). */
  readonly tcpEnds: TcpEndPeers | null;
  readonly bulkBytes: number;
  readonly phases: readonly Phase[];
  /** The options the backend was started with (minus the forwards). */
  readonly backendOptions: Omit<BackendOptions, "forwards">;
  /** What the host read from the guest's forwarded TCP port (after `ready tcp-in`). */
  readonly tcpIn: Promise<string>;
  /** The guest's answer to the host's datagram on the forwarded UDP port. */
  readonly udpIn: Promise<string>;
  /** The shell script the guest runs (through fw_cfg). */
  readonly script: string;
  /** Host→guest forwards the backend was given (a TCP and a UDP one, on 127.0.0.1). */
  readonly forwards: readonly PortForward[];

  private constructor(init: {
    backend: StartedBackend;
    guest: QemuGuest;
    http: HttpServer;
    dns: DnsResponder;
    udpEcho: UdpEcho;
    sink: TcpSink;
    iperf: IperfServer | null;
    tcpEnds: TcpEndPeers | null;
    bulkBytes: number;
    phases: readonly Phase[];
    forwards: readonly PortForward[];
    backendOptions: Omit<BackendOptions, "forwards">;
    script: string;
  }) {
    this.backendOptions = init.backendOptions;
    this.script = init.script;
    this.forwards = init.forwards;
    this.backend = init.backend;
    this.guest = init.guest;
    this.http = init.http;
    this.dns = init.dns;
    this.udpEcho = init.udpEcho;
    this.sink = init.sink;
    this.iperf = init.iperf;
    this.tcpEnds = init.tcpEnds;
    this.bulkBytes = init.bulkBytes;
    this.phases = init.phases;
    const tcpPort = init.forwards.find((f) => f.protocol === "tcp")!.hostPort;
    const udpPort = init.forwards.find((f) => f.protocol === "udp")!.hostPort;
    this.tcpIn = init.phases.includes("tcp-in")
      ? this.#whenReady("tcp-in").then(() =>
        tcpExchange(tcpPort, HOST_TCP_MESSAGE, GUEST_PAGE, 30_000)
      )
      : Promise.reject(new Error("tcp-in not in this run"));
    this.udpIn = init.phases.includes("udp-in")
      ? this.#whenReady("udp-in").then(() => udpRequest(udpPort, HOST_UDP_MESSAGE, 30_000))
      : Promise.reject(new Error("udp-in not in this run"));
    this.tcpIn.catch(() => {});
    this.udpIn.catch(() => {});
  }

  /** Starts the host peers, the backend `kind` and the guest. */
  static async start(kind: BackendKind, options: ScenarioOptions = {}): Promise<E2eSession> {
    for (let attempt = 1;; attempt++) {
      try {
        return await E2eSession.#startOnce(kind, options);
      } catch (error) {
        if (attempt >= START_ATTEMPTS) throw error;
        // The host's peers, the backend and slirp's forwards bind ports picked a moment
        // before: one taken in between fails the start, and new picks may not.
        console.error(`e2e ${kind}: start attempt ${attempt} failed, trying again: ${error}`);
      }
    }
  }

  static async #startOnce(kind: BackendKind, options: ScenarioOptions): Promise<E2eSession> {
    const phases = options.phases ?? PHASES;
    const bulkBytes = options.bulkBytes ?? 100 * 1024 * 1024;
    const forwards: PortForward[] = [
      { protocol: "tcp", hostPort: freePort(), guestPort: GUEST_TCP_PORT },
      { protocol: "udp", hostPort: await freeTcpUdpPort(), guestPort: GUEST_UDP_PORT },
    ];
    const started: { close(): unknown }[] = [];
    try {
      const http = startHttpServer();
      started.push(http);
      const dns = await startDnsResponder({ [DNS_TEST_NAME]: DNS_TEST_ADDRESS });
      started.push(dns);
      const udpEcho = await startUdpEcho();
      started.push(udpEcho);
      const sink = startTcpSink(bulkBytes);
      started.push(sink);
      const iperf = phases.includes("iperf") ? await startIperfServer(freePort()) : null;
      if (iperf) started.push(iperf);
      const tcpEnds = phases.some((p) => TCP_END_PHASES.includes(p)) ? startTcpEndPeers() : null;
      if (tcpEnds) started.push(tcpEnds);
      const tpasst = kind === "tpasst-vhost" || kind === "tpasst-stream";
      const backendOptions = {
        ...(tpasst ? { dnsServers: TEST_DNS_SERVERS, mapGuestAddr4: TEST_MAP_GUEST_ADDR4 } : {}),
        ...options.backend,
      };
      const backend = await startBackend(kind, { forwards, ...backendOptions });
      started.push({ close: () => backend.stop() });
      const script = buildGuestScript(
        phases,
        {
          http: http.port,
          dns: dns.port,
          udpEcho: udpEcho.port,
          sink: sink.port,
          iperf: iperf?.port ?? 0,
          hostLoopback6: backend.capabilities.hostLoopback6,
          mapGuestAddr4: backend.capabilities.mapGuestAddr4,
          tcpEnds: tcpEnds?.ports,
        },
        bulkBytes,
        options.iperfSeconds ?? 3,
        backendOptions.queues ?? 1,
        options.guestMtu ?? null,
      );
      const guest = await QemuGuest.launch({
        netdev: backend.netdev,
        script,
        onLine: options.onLine,
      });
      started.push({ close: () => guest.kill() });
      if (backend.netdev.kind === "user") {
        // slirp binds the forwards as QEMU starts and exits at once if one is taken
        // ("Could not set up host forwarding rule"): wait for the guest's first line.
        try {
          await guest.waitUntil(
            () => guest.serialLineCount > 0,
            "the guest's first serial line",
            FIRST_SERIAL_LINE_TIMEOUT_MS,
          );
        } catch (error) {
          if (guest.exited) throw error;
          // still booting (a loaded machine): the tests' own timeouts apply
        }
      }
      return new E2eSession({
        backend,
        guest,
        http,
        dns,
        udpEcho,
        sink,
        iperf,
        tcpEnds,
        bulkBytes,
        phases,
        forwards,
        backendOptions,
        script,
      });
    } catch (error) {
      for (const peer of started.reverse()) await peer.close();
      throw error;
    }
  }

  /**
   * Waits for the first of `names` (a result or its `-failed` twin); throws with the
   * serial tail and the backend's output if the failure mark came first.
   */
  async result(name: string, timeoutMs: number): Promise<string> {
    const phase = name.replace(/-[a-z0-9]+$/, "");
    const failed = [`${name}-failed`, `${phase}-failed`, "error"];
    let mark;
    try {
      mark = await this.guest.waitForAnyMark([name, ...failed], timeoutMs);
    } catch (error) {
      throw this.#withBackendOutput(error as Error);
    }
    if (mark.name !== name) {
      throw this.#withBackendOutput(
        this.guest.failure(`Guest reported ${mark.name}: ${mark.value}`),
      );
    }
    return mark.value;
  }

  /** Kills QEMU and the backend at once (for process exit handlers; no cleanup). */
  abort(): void {
    this.guest.abort();
    this.backend.abort();
  }

  /** Stops the guest, the backend and every host peer. */
  async close(): Promise<void> {
    await this.guest.kill();
    await this.backend.stop();
    await this.http.close();
    await this.dns.close();
    await this.udpEcho.close();
    this.sink.close();
    await this.iperf?.close();
    this.tcpEnds?.close();
  }

  #withBackendOutput(error: Error): Error {
    const output = this.backend.output().trim();
    if (output !== "") error.message += `\n--- ${this.backend.kind} output ---\n${output}`;
    return error;
  }

  #whenReady(what: string): Promise<void> {
    return this.guest.waitUntil(
      () => this.guest.values("ready").includes(what),
      `mark "ready ${what}"`,
      READY_TIMEOUT_MS,
    );
  }
}
