// The deferred queue's bulk IMAP commands, run through imapflow's exec() with
// handlers of their own for the untagged FETCH rows (the connection state:
// tags, SELECTED mailbox, literals, VANISHED, stays imapflow's):
// - fetchObjects: FETCH of UID, FLAGS and BODY.PEEK[] (RFC 9051 6.4.5). Each
//   row's parsed data items are read directly, the body kept as the literal's
//   Buffer; imapflow's fetch() would turn every row into a message object
//   (each data item name compiled back to a string, an id hash, one async
//   iterator step per row) and ask for MODSEQ as well.
// - expungeObjects: UID STORE +FLAGS.SILENT (\Deleted) + UID EXPUNGE; the
//   FETCH rows the STORE still gets back are dropped unread.
import type { ImapAttribute, ImapAttributeNode, ImapFlow, ImapResponse } from "imapflow";
import { CpmError } from "../errors/catalogue.js";

/** One untagged FETCH row (RFC 9051 7.5.2). */
export interface FetchedObject {
  /** UID; undefined when the row has none. */
  uid: number | undefined;
  /** FLAGS holds \Deleted. */
  deleted: boolean;
  /** BODY[]: the whole object as stored; undefined when the row has none (e.g. a flag update). */
  source: Buffer | undefined;
}

/** imapflow's command runner (ImapFlow.exec, not in its typings): resolves on the tagged OK, rejects on NO/BAD. */
interface ImapExec {
  exec(
    command: string,
    attributes: ImapAttribute[],
    options: { untagged: Record<string, (untagged: ImapResponse) => Promise<void> | void> },
  ): Promise<{ next(): void }>;
}

const ITEMS: ImapAttributeNode[] = [
  { type: "ATOM", value: "UID" },
  { type: "ATOM", value: "FLAGS" },
  { type: "ATOM", value: "BODY.PEEK", section: [] },
];

/** RFC 9051 uniqueid: digits, 1 to 2^32-1. */
function uidOf(v: unknown): number | undefined {
  if (typeof v !== "string" || !/^[0-9]{1,10}$/.test(v)) return undefined;
  const n = Number(v);
  return n > 0 && n <= 0xffffffff ? n : undefined;
}

/** The data items of one untagged FETCH row (name value pairs, RFC 9051 7.5.2). */
function readRow(untagged: ImapResponse): FetchedObject {
  const row: FetchedObject = { uid: undefined, deleted: false, source: undefined };
  const items = untagged.attributes?.[1];
  if (!Array.isArray(items)) return row;
  for (let i = 0; i + 1 < items.length; i += 2) {
    const key = items[i];
    const value = items[i + 1];
    if (!key || Array.isArray(key) || key.type !== "ATOM" || typeof key.value !== "string") continue;
    const name = key.value.toUpperCase();
    if (name === "UID") row.uid = uidOf(value?.value);
    else if (name === "FLAGS")
      row.deleted = Array.isArray(value) && value.some((f) => typeof f?.value === "string" && f.value.toLowerCase() === "\\deleted");
    else if (name === "BODY" && key.section?.length === 0 && value && !Array.isArray(value)) {
      // a literal is a Buffer; a quoted string (small bodies, some servers) was decoded as UTF-8
      if (Buffer.isBuffer(value.value)) row.source = value.value;
      else if (typeof value.value === "string") row.source = Buffer.from(value.value, "utf8");
    }
  }
  return row;
}

function execOf(client: ImapFlow): ImapExec["exec"] {
  const exec = (client as unknown as Partial<ImapExec>).exec;
  if (typeof exec !== "function") throw new CpmError("CPM_ERR_INTERNAL", "imapflow has no exec(): the lean FETCH cannot run");
  return exec;
}

/**
 * FETCH (or UID FETCH) `range` (UID FLAGS BODY.PEEK[]) in the selected
 * mailbox; `onRow` gets each untagged FETCH row as it arrives, in server
 * order. Resolves with the number of rows. \Seen is not set (PEEK).
 */
export async function fetchObjects(client: ImapFlow, range: string, byUid: boolean, onRow: (row: FetchedObject) => void): Promise<number> {
  const exec = execOf(client);
  let rows = 0;
  let failed: unknown;
  const response = await exec.call(client, byUid ? "UID FETCH" : "FETCH", [{ type: "SEQUENCE", value: range }, ITEMS], {
    untagged: {
      FETCH: (untagged) => {
        rows++;
        if (failed !== undefined) return;
        try {
          onRow(readRow(untagged));
        } catch (err) {
          // failed at the tagged response: an untagged handler's throw is only logged by imapflow
          failed = err;
        }
      },
    },
  });
  response.next();
  if (failed !== undefined) throw failed;
  return rows;
}

/**
 * Removes `uids` (a UID set) from the selected mailbox: UID STORE
 * +FLAGS.SILENT (\Deleted), then UID EXPUNGE of the same set (RFC 4315 2.1).
 * With CONDSTORE enabled the server still answers the STORE with one FETCH
 * row per item (MODSEQ, RFC 7162 3.1.3); they are dropped here unread instead
 * of being turned into imapflow flag events. Resolves false when a command
 * failed (as imapflow's messageDelete does).
 */
export async function expungeObjects(client: ImapFlow, uids: string): Promise<boolean> {
  const exec = execOf(client);
  const set: ImapAttributeNode = { type: "SEQUENCE", value: uids };
  try {
    const stored = await exec.call(
      client,
      "UID STORE",
      [set, { type: "ATOM", value: "+FLAGS.SILENT" }, [{ type: "ATOM", value: "\\Deleted" }]],
      {
        untagged: { FETCH: () => {} },
      },
    );
    stored.next();
    const expunged = await exec.call(client, "UID EXPUNGE", [set], { untagged: {} });
    expunged.next();
    return true;
  } catch {
    return false;
  }
}

/** One item's flags and INTERNALDATE (RFC 9051 2.3.3): its per-device marks (src/procedures/device-view.ts). */
export interface FetchedMarks {
  uid: number;
  /** FLAGS as the server gave them (system flags with their backslash, keywords as atoms). */
  flags: string[];
  /** INTERNALDATE (ms): when the object reached the store; undefined when the server gave none. */
  internalDate: number | undefined;
}

const MARK_ITEMS: ImapAttributeNode[] = [
  { type: "ATOM", value: "UID" },
  { type: "ATOM", value: "FLAGS" },
  { type: "ATOM", value: "INTERNALDATE" },
];

function readMarks(untagged: ImapResponse): FetchedMarks | undefined {
  const items = untagged.attributes?.[1];
  if (!Array.isArray(items)) return undefined;
  let uid: number | undefined;
  let flags: string[] = [];
  let internalDate: number | undefined;
  for (let i = 0; i + 1 < items.length; i += 2) {
    const key = items[i];
    const value = items[i + 1];
    if (!key || Array.isArray(key) || key.type !== "ATOM" || typeof key.value !== "string") continue;
    const name = key.value.toUpperCase();
    if (name === "UID") uid = uidOf(value?.value);
    else if (name === "FLAGS" && Array.isArray(value))
      flags = value.flatMap((f) => (f && !Array.isArray(f) && typeof f.value === "string" ? [f.value] : []));
    else if (name === "INTERNALDATE" && value && !Array.isArray(value) && typeof value.value === "string") {
      // "04-Dec-2026 20:50:38 +0000" (RFC 9051 date-time)
      const t = Date.parse(value.value.trim());
      internalDate = Number.isFinite(t) ? t : undefined;
    }
  }
  return uid === undefined ? undefined : { uid, flags, internalDate };
}

/**
 * UID FETCH `uids` (UID FLAGS INTERNALDATE) in the selected mailbox, without
 * the bodies: the marks of each item. Rows of items flagged \Deleted are left
 * out (acked, their EXPUNGE did not complete).
 */
export async function fetchMarks(client: ImapFlow, uids: string): Promise<FetchedMarks[]> {
  const exec = execOf(client);
  const out: FetchedMarks[] = [];
  const response = await exec.call(client, "UID FETCH", [{ type: "SEQUENCE", value: uids }, MARK_ITEMS], {
    untagged: {
      FETCH: (untagged) => {
        const row = readMarks(untagged);
        if (row && !row.flags.some((f) => f.toLowerCase() === "\\deleted")) out.push(row);
      },
    },
  });
  response.next();
  return out.sort((a, b) => a.uid - b.uid);
}

/**
 * UID STORE +FLAGS.SILENT (keyword) on `uids` of the selected mailbox (RFC
 * 9051 6.4.6). Whether the server kept it (a mailbox may allow no new
 * keyword, PERMANENTFLAGS without \*) is for a FETCH of the flags to say:
 * the STORE succeeds either way on some servers. Rejects on NO / BAD.
 */
export async function addKeyword(client: ImapFlow, uids: string, keyword: string): Promise<void> {
  const exec = execOf(client);
  const stored = await exec.call(
    client,
    "UID STORE",
    [{ type: "SEQUENCE", value: uids }, { type: "ATOM", value: "+FLAGS.SILENT" }, [{ type: "ATOM", value: keyword }]],
    { untagged: { FETCH: () => {} } },
  );
  stored.next();
}
