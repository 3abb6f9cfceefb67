/**
 * Which {@link SessionFactory} serves a frontend in each mode: vhost-user
 * (src/vhost_user/ session driving src/tap/ VhostUserLink rings) or passt's stream
 * protocol (src/tap/ StreamTransport). Both deliver frames to the same handler, the
 * network stack, which outlives every session.
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import type { FrameHandler } from "../tap/frame_transport.ts";
import { streamSessionFactory } from "../tap/stream_transport.ts";
import { VhostUserLink } from "../tap/vhost_user_link.ts";
import { vhostUserSessionFactory } from "../vhost_user/session.ts";
import type { SessionFactory } from "../tap/frontend_session.ts";
import type { MigrationController } from "./migration.ts";

/**
 * The factory serving frontends for `config.mode`, delivering guest frames to
 * `handler`; vhost-user sessions save and load the device state through `migration`.
 */
export function sessionFactoryFor(
  config: Config,
  handler: FrameHandler,
  migration: MigrationController | null = null,
): SessionFactory {
  if (config.mode === "vhost-user") {
    return vhostUserSessionFactory(
      () => new VhostUserLink(handler),
      migration === null ? {} : {
        deviceState: migration,
        onClose: () => migration.sessionEnded(),
      },
    );
  }
  return streamSessionFactory(handler);
}
