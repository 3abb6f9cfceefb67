/**
 * Integration point: which {@link SessionFactory} serves a frontend in each mode.
 * Until the vhost-user session (src/vhost_user/) and the stream transport
 * (src/tap/) are wired in here, both modes use the clearly labelled placeholder.
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import type { SessionFactory } from "./frontend_session.ts";
import { placeholderSessionFactory } from "./placeholder_session.ts";

/** The factory serving frontends for `config.mode`. */
export function sessionFactoryFor(config: Config): SessionFactory {
  return placeholderSessionFactory(config.mode);
}
