/**
 * The real {@link EchoSocketFactory}: unprivileged ping sockets from the C helper
 * (ffi/ping_socket.ts). Kept apart from icmp_echo.ts so that the echo service's
 * unit tests do not load the native library.
 *
 * @module
 */

import { PingSocket } from "../../../ffi/ping_socket.ts";
import type { EchoSocketFactory } from "./echo.ts";

/** Opens a kernel ping socket; throws NativeError (errno EACCES when forbidden). */
export const pingSocketFactory: EchoSocketFactory = (family) => PingSocket.open(family);
