// Reading a folder on a pooled IMAP connection (imapflow): selecting it and
// listing its Message-IDs. Shared by the deferred queue and the recorder.
import { isConnectionError, type PooledConnection } from "./imap-pool.js";

/** Releases imapflow's lock after CLOSE (RFC 9051 6.4.1), so that the pooled connection does not keep the
 * folder selected and receive an untagged EXISTS for every later APPEND to it. */
export type MailboxLock = { release(): Promise<void> };

/** NO [NONEXISTENT] (RFC 5530) or the equivalent text of older servers. */
function isNonexistent(err: unknown): boolean {
  const e = err as { serverResponseCode?: string; responseText?: string } | null;
  return e?.serverResponseCode === "NONEXISTENT" || /doesn't exist|does not exist|not found/i.test(e?.responseText ?? "");
}

/** SELECT (or EXAMINE when readOnly) through imapflow's mailbox lock; undefined when the folder does not exist. */
export async function lockMailbox(conn: PooledConnection, folder: string, readOnly: boolean): Promise<MailboxLock | undefined> {
  try {
    const lock = await conn.cmd(readOnly ? "EXAMINE" : "SELECT", () => conn.client.getMailboxLock(folder, { readOnly }));
    return {
      release: async () => {
        try {
          // after EXAMINE nothing is expunged; after SELECT only \Deleted items, i.e. acked ones
          await conn.cmd("CLOSE", () => conn.client.mailboxClose());
        } catch {
          // the connection is discarded by the pool if it is broken
        } finally {
          lock.release();
        }
      },
    };
  } catch (err) {
    if (!isConnectionError(err) && isNonexistent(err)) return undefined;
    throw err;
  }
}

/** The bare Message-IDs (without brackets) of every object in a folder, in UID order; [] for a missing folder. */
export async function folderMessageIds(conn: PooledConnection, folder: string): Promise<string[]> {
  const lock = await lockMailbox(conn, folder, true);
  if (!lock) return [];
  try {
    if (!conn.client.mailbox || conn.client.mailbox.exists === 0) return [];
    const found: string[] = [];
    await conn.cmd("FETCH", async () => {
      for await (const m of conn.client.fetch("1:*", { uid: true, headers: ["message-id"] })) {
        const id = /^Message-ID:\s*<([^>\r\n]+)>/im.exec(m.headers?.toString("utf8") ?? "")?.[1];
        if (id) found.push(id);
      }
    });
    return found;
  } finally {
    await lock.release();
  }
}
