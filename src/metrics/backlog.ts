// The deferred backlog for the metrics: items waiting in the served users'
// queues and the age of the oldest, read from the Message Store (LIST-STATUS
// per user with pending data, RFC 5819, and the first item of each queue).
// Totals only: no per-user figure leaves this function.
import type { DeferredQueue } from "../store/deferred-queue.js";

export interface Backlog {
  items: number;
  oldestAgeSeconds: number;
}

export async function readBacklog(
  users: Iterable<string>,
  queue: Pick<DeferredQueue, "listSessions" | "read">,
  now = Date.now(),
): Promise<Backlog> {
  let items = 0;
  let oldest = now;
  for (const servedUser of users) {
    for (const s of await queue.listSessions(servedUser)) {
      items += s.count;
      const [first] = await queue.read({ servedUser, folder: s.folder }, 1);
      const at = first?.item?.receivedAt.getTime();
      if (at !== undefined && at < oldest) oldest = at;
    }
  }
  return { items, oldestAgeSeconds: items === 0 ? 0 : Math.max(0, (now - oldest) / 1000) };
}
