/**
 * A {@link FrameHandler} for transport tests: records a copy of every frame and
 * the order of batch and link events.
 *
 * @module
 */

import type { FrameHandler, GuestLink } from "../../../src/tap/frame_transport.ts";

/** A frame handler that records what a transport hands it. */
export class RecordingHandler implements FrameHandler {
  /** Copies of the frames handed over, oldest first. */
  frames: Uint8Array[] = [];
  /** "up", "down" and "batch:N" (N = frames seen so far), in order. */
  events: string[] = [];
  /** The link given by the last linkUp. */
  link: GuestLink | null = null;

  /** Records a copy of the frame. */
  handleFrame(frame: Uint8Array): void {
    this.frames.push(frame.slice());
  }

  /** Records the end of a batch. */
  endOfBatch(): void {
    this.events.push(`batch:${this.frames.length}`);
  }

  /** Records the link coming up and keeps it. */
  linkUp(link: GuestLink): void {
    this.link = link;
    this.events.push("up");
  }

  /** Records the link going down. */
  linkDown(): void {
    this.events.push("down");
  }

  /** Times the transport said its front-end left (FrameHandler.frontendGone). */
  frontendGoneCalls = 0;

  /** Counts the front-end leaving (not an event: link tests order only up, down, batches). */
  frontendGone(): void {
    this.frontendGoneCalls++;
  }
}
