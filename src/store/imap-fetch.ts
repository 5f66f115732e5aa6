// A lean FETCH of UID, FLAGS and BODY.PEEK[] (RFC 9051 6.4.5) for reading
// whole objects in bulk (the deferred queue). imapflow's fetch() turns every
// untagged FETCH row into a message object (each data item name compiled back
// to a string, an id hash, one async iterator step per row) and asks for
// MODSEQ as well; here the command goes through imapflow's exec() with a
// handler of its own for the untagged FETCH rows, which reads the parsed data
// items directly and keeps the body as the literal's Buffer. The connection
// state (tags, SELECTED mailbox, literals, timeouts) stays imapflow's.
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

/**
 * FETCH (or UID FETCH) `range` (UID FLAGS BODY.PEEK[]) in the selected
 * mailbox; `onRow` gets each untagged FETCH row as it arrives, in server
 * order. Resolves with the number of rows. \Seen is not set (PEEK).
 */
export async function fetchObjects(client: ImapFlow, range: string, byUid: boolean, onRow: (row: FetchedObject) => void): Promise<number> {
  const exec = (client as unknown as Partial<ImapExec>).exec;
  if (typeof exec !== "function") throw new CpmError("CPM_ERR_INTERNAL", "imapflow has no exec(): the lean FETCH cannot run");
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
