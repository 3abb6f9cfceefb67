/**
 * A run of frames toward the guest as the ring fuzzers make one: a random number of
 * frames of random sizes reserved at once (VhostUserLink.reserveFrames), some of them
 * committed — the last maybe short — and the rest given back.
 *
 * @module
 */

import {
  type FrameSpace,
  MAX_FRAME_LENGTH,
  MAX_RUN_FRAMES,
  SendResult,
} from "../../src/tap/frame_transport.ts";
import type { VhostUserLink } from "../../src/tap/vhost_user_link.ts";

/** The fuzzer's seeded random numbers. */
export interface RunRandom {
  /** An integer in [0, n). */
  below(n: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
}

/** What the runs came to, added to the fuzzer's report. */
export interface RunStats {
  /** Runs of several frames reserved. */
  runs: number;
  /** Frames committed from runs. */
  runFramesSent: number;
  noRoom: number;
  dropped: number;
}

/**
 * Reserves a random run on `link` into `space` (which accepts an iovec table), runs
 * `meanwhile` (the guest rewriting its ring under the reservation), commits a random
 * number of the frames and gives the rest back.
 */
export function reserveRandomRun(
  link: VhostUserLink,
  space: FrameSpace,
  r: RunRandom,
  stats: RunStats,
  meanwhile: () => void = () => {},
): void {
  const headers = 14 + r.below(80);
  const maxLength = headers + 1 + r.below(r.chance(0.5) ? 3000 : MAX_FRAME_LENGTH);
  const result = link.reserveFrames(space, 1 + r.below(MAX_RUN_FRAMES + 2), maxLength, headers);
  if (result !== SendResult.Sent) {
    if (result === SendResult.NoRoom) stats.noRoom++;
    else stats.dropped++;
    return;
  }
  if (space.frames > 1) stats.runs++;
  meanwhile();
  const commits = r.below(space.frames + 1);
  for (let f = 0; f < commits; f++) {
    const room = space.frames > 1 ? space.frameRooms[f] : space.length - headers;
    const payload = r.chance(0.8) ? room : r.below(room + 2);
    // Zero headers, like the zero frames the fuzzers send: a random buffer may overlap
    // the guest's own used ring, and zeros there still read as ids inside the ring.
    space.views[0].fill(0, 0, Math.min(headers, space.views[0].length));
    if (link.commitFrame(headers + payload) === SendResult.Sent) stats.runFramesSent++;
  }
  link.cancelFrame();
}
