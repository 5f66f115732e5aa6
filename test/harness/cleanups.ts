// Per-test cleanup: what a test pushes runs after it, last pushed first
// (sockets, peers, listeners), also when the test failed.
import { afterEach } from "node:test";
import { buildConfig } from "../../src/config/config.js";
import type { MediaConfig } from "../../src/media/msrp-media-plane.js";

export type Cleanup = () => Promise<void> | void;

/** Registers the afterEach hook in the calling test file; push cleanups to the returned list. */
export function useCleanups(): Cleanup[] {
  const list: Cleanup[] = [];
  afterEach(async () => {
    for (const c of list.splice(0).reverse()) await c();
  });
  return list;
}

/** media.* for tests: on, any free port, a 5 s client-leg timeout, then `over`. */
export function testMediaConfig(over: Partial<MediaConfig> = {}): MediaConfig {
  return { ...buildConfig({ media: { enabled: true, port: 0, clientLegTimeoutMs: 5000 } }).media, ...over };
}
