/**
 * The TCP ports a process listens on, from /proc: its fds that are sockets, matched
 * by inode against the listening sockets of its network namespace (proc(5),
 * /proc/PID/net/tcp and tcp6).
 *
 * @module
 */

/** `st` of a listening socket in /proc/net/tcp (TCP_LISTEN in the kernel's enum). */
const TCP_STATE_LISTEN = "0A";

/** One listening socket: its local address as /proc shows it (hex) and its port. */
export interface TcpListener {
  readonly localHex: string;
  readonly port: number;
}

/** The inodes of the sockets among `pid`'s open fds. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
    } catch {
      continue; // closed meanwhile
    }
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match !== null) inodes.add(match[1]);
  }
  return inodes;
}

/** The TCP sockets (IPv4 and IPv6) that process `pid` holds in the listening state. */
export function tcpListenersOf(pid: number): TcpListener[] {
  const inodes = socketInodes(pid);
  const listeners: TcpListener[] = [];
  for (const table of ["tcp", "tcp6"]) {
    const lines = Deno.readTextFileSync(`/proc/${pid}/net/${table}`).split("\n").slice(1);
    for (const line of lines) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10 || fields[3] !== TCP_STATE_LISTEN || !inodes.has(fields[9])) continue;
      const [localHex, portHex] = fields[1].split(":");
      listeners.push({ localHex, port: parseInt(portHex, 16) });
    }
  }
  return listeners;
}
