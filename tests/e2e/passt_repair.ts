/**
 * Debian 13's passt-repair (unpacked by bench/fetch_reference_passt.sh) for the
 * migration tests that run tpasst without CAP_NET_ADMIN: TCP_REPAIR is then switched
 * only through this helper, connected to tpasst's repair socket.
 *
 * @module
 */

import { waitFor } from "../cli/cli_helpers.ts";
import { REFERENCE_PASST_ROOT } from "./backends.ts";

/** The libraries of the unpacked passt package (its glibc and loader). */
const PASST_LIBS = `${REFERENCE_PASST_ROOT}usr/lib/x86_64-linux-gnu`;
/** The passt-repair binary of the unpacked package. */
const PASST_REPAIR = `${REFERENCE_PASST_ROOT}usr/bin/passt-repair`;

/** Whether Debian 13's passt-repair is unpacked here. */
export const hasPasstRepair = (() => {
  try {
    return Deno.statSync(PASST_REPAIR).isFile;
  } catch {
    return false;
  }
})();

/** Command prefix that runs tpasst as root without CAP_NET_ADMIN. */
export const WITHOUT_NET_ADMIN = [
  "setpriv",
  "--bounding-set=-net_admin",
  "--inh-caps=-net_admin",
  "--",
];

/**
 * Starts passt-repair (through its own glibc's loader) on the repair socket of the
 * tpasst listening on vhost-user socket `socketPath` (`SOCKET.repair`), once that socket
 * exists, and waits until tpasst's `output()` says the helper is connected.
 */
export async function startPasstRepair(
  socketPath: string,
  output: () => string,
): Promise<Deno.ChildProcess> {
  const path = `${socketPath}.repair`;
  await waitFor(`the repair socket ${path}`, () => {
    try {
      return Deno.statSync(path).isSocket;
    } catch {
      return false;
    }
  });
  const helper = new Deno.Command(`${PASST_LIBS}/ld-linux-x86-64.so.2`, {
    args: ["--library-path", PASST_LIBS, PASST_REPAIR, path],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitFor(
    "the passt-repair helper to connect",
    () => /TCP_REPAIR helper connected/.test(output()),
  );
  return helper;
}
