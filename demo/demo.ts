// npm run demo: the PF's main story, played from the wire on loopback with
// the deferred-delivery rig (test/harness/deferred-chat.ts). The Controlling
// Function (SIPp) invites the served user through Kamailio, the PF anchors the
// MSRP media, the client's MSRP connection drops, the CF's chat messages and
// an interim GSO are kept in the served user's deferred queue, the CF ends the
// group (BYE, Reason: SIP;cause=480: the GSO is stored), the S-CSCF sends a
// third-party REGISTER and the PF delivers every kept message over MSRP, in
// order; the client then ends the delivery session. Printed: the components,
// a SIP/MSRP ladder diagram, where each object landed in the store, and the
// sidecar's lifecycle and BYE lines. Everything started is stopped by PID at
// the end; the exit code is non-zero when the story did not complete.
import assert from "node:assert/strict";
import { mailboxNameOf } from "../src/store/mailbox-name.js";
import { triggerSipp } from "../test/harness/anchored-chat.js";
import {
  type Chat,
  DeferredChatRig,
  deferredFolder,
  GSO_TYPE,
  groupFolder,
  type Rung,
  SERVED_USER,
} from "../test/harness/deferred-chat.js";
import { gsoXml } from "../test/harness/group-chat.js";
import { connectImap } from "../test/harness/imap-read.js";
import { header } from "../test/harness/sipp.js";
import { waitFor } from "../test/harness/wait.js";

const TEXTS = ["Hello group", "Are we still on for Friday?", "See you there"];
const BYE_REASON = 'Reason: SIP;cause=480;text="Temporarily Unavailable"';

// ---------------------------------------------------------------- ladder

const WIDTH = 110;
/** The lifeline column of each party. */
const COLUMNS: Record<string, number> = { CF: 9, PF: 50, client: 92, "S-CSCF": 103 };
const HEADINGS: [string, string][] = [
  ["CF", "CF"],
  ["PF", "PF (Kamailio+sidecar)"],
  ["client", "client"],
  ["S-CSCF", "S-CSCF"],
];

/** Shorter content types, so that more of a label fits between two lifelines. */
function shorten(what: string): string {
  if (what === "OPTIONS") return "OPTIONS (demo's trigger, not via PF)";
  if (what.startsWith(`MSRP SEND ${GSO_TYPE}`)) return "MSRP SEND GSO (group state XML)";
  return what.replace("message/cpim", "CPIM");
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(0, max - 1))}…`;
}

function lifelines(): string[] {
  const row = Array.from({ length: WIDTH }, () => " ");
  for (const c of Object.values(COLUMNS)) row[c] = "│";
  return row;
}

function put(row: string[], at: number, text: string): void {
  for (const [i, ch] of [...text].entries()) if (at + i < WIDTH) row[at + i] = ch;
}

/** One line of the ladder: the time since the first rung, an arrow between two lifelines with its label. */
function ladderLine(r: Rung, t0: number): string {
  const row = lifelines();
  put(row, 0, `+${((r.t - t0) / 1000).toFixed(3)}s`.padStart(8));
  const a = COLUMNS[r.from];
  const b = COLUMNS[r.to];
  if (a === undefined || b === undefined) {
    put(row, 9, ` ${r.from} -> ${r.to}: ${r.what}`);
    return row.join("").trimEnd();
  }
  const lo = Math.min(a, b);
  const inner = Math.max(a, b) - lo - 1;
  const label = truncate(shorten(r.what), inner - 4);
  const fill = "─".repeat(inner - 3 - label.length);
  put(row, lo + 1, a < b ? `──${label}${fill}▶` : `◀──${label}${fill}`);
  return row.join("").trimEnd();
}

function printLadder(ladder: readonly Rung[]): void {
  const rungs = [...ladder].sort((x, y) => x.t - y.t);
  const t0 = rungs[0]?.t ?? 0;
  const head = Array.from({ length: WIDTH }, () => " ");
  for (const [key, name] of HEADINGS) put(head, COLUMNS[key] as number, name);
  console.log(head.join("").trimEnd());
  for (const r of rungs) console.log(ladderLine(r, t0));
}

// ----------------------------------------------------------------- store

interface StoredObject {
  uid: number;
  contentType: string;
  source: string;
}

/** The served user's folders as the user's own login sees them (imapflow), with their objects in UID order. */
async function mailbox(rig: DeferredChatRig): Promise<{ path: string; selectable: boolean; objects: StoredObject[] }[]> {
  const c = await connectImap(rig.dovecot, rig.login());
  try {
    const out: { path: string; selectable: boolean; objects: StoredObject[] }[] = [];
    for (const box of (await c.list()).sort((x, y) => x.path.localeCompare(y.path))) {
      const selectable = !box.flags.has("\\Noselect") && !box.flags.has("\\NonExistent");
      const objects: StoredObject[] = [];
      if (selectable) {
        const lock = await c.getMailboxLock(box.path, { readOnly: true });
        try {
          if (c.mailbox && c.mailbox.exists > 0) {
            for await (const m of c.fetch("1:*", { source: true, uid: true })) {
              if (!m.source) continue;
              const source = m.source.toString("utf8");
              const ct = /^Content-Type:\s*([^;\r\n]+)/im.exec(source)?.[1]?.trim() ?? "(none)";
              objects.push({ uid: m.uid, contentType: ct, source });
            }
          }
        } finally {
          lock.release();
        }
      }
      out.push({ path: box.path, selectable, objects: objects.sort((x, y) => x.uid - y.uid) });
    }
    return out;
  } finally {
    await c.logout().catch(() => c.close());
  }
}

/** The body of a stored object, decoded per its Content-Transfer-Encoding. */
function bodyOf(source: string): string {
  const at = source.search(/\r?\n\r?\n/);
  const head = at < 0 ? source : source.slice(0, at);
  const body = at < 0 ? "" : source.slice(at).replace(/^\r?\n\r?\n/, "");
  const cte = /^Content-Transfer-Encoding:\s*(\S+)/im.exec(head)?.[1]?.toLowerCase();
  return (cte === "base64" ? Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8") : body).replace(/\r\n/g, "\n");
}

/** A one-line view of a stored object: the text of a chat message, or the XML root. */
function previewOf(o: StoredObject): string {
  const lines = bodyOf(o.source)
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const pick = o.contentType === GSO_TYPE ? lines.find((l) => l.startsWith("<groupstate")) : lines.at(-1);
  return JSON.stringify(truncate(pick ?? "", 56));
}

let gsoShown = false;

type Mailbox = Awaited<ReturnType<typeof mailbox>>;

function printMailbox(boxes: Mailbox, user: string, when: string): void {
  console.log(`\n${when}: mailbox "${user}" (the served user's own IMAP login)`);
  for (const box of boxes) {
    if (!box.selectable) {
      console.log(`  ${box.path}/`);
      continue;
    }
    console.log(`  ${box.path}  (${box.objects.length} object${box.objects.length === 1 ? "" : "s"})`);
    for (const o of box.objects) {
      console.log(`    uid ${String(o.uid).padEnd(3)} ${o.contentType.padEnd(36)} ${previewOf(o)}`);
      if (o.contentType === GSO_TYPE && !gsoShown && box.path.startsWith("Default/")) {
        gsoShown = true;
        console.log(`\n${gsoXml(o.source).replace(/\r\n/g, "\n").replace(/^/gm, "        ")}\n`);
      }
    }
  }
}

// ----------------------------------------------------------------- story

async function tell(rig: DeferredChatRig): Promise<void> {
  const ready = rig.sidecar.logLines().find((l) => l.msg === "sidecar ready") ?? {};
  console.log("Components (loopback):");
  console.log(`  Dovecot (Message Store)  pid ${rig.dovecot.pid}, IMAP 127.0.0.1:${rig.dovecot.port}, one mailbox per served user`);
  console.log(`  Kamailio                 pid ${rig.kamailio.pid}, SIP udp:${rig.kamailio.address} (kamailio/kamailio.cfg)`);
  console.log(
    `  sidecar                  pid ${rig.sidecar.pid}, gRPC ${rig.sidecar.target}, MSRP ${String(ready.media)}, SIP UA ${String(ready.deferredDelivery)}`,
  );
  console.log("  SIPp as the CF, the client and the S-CSCF; MSRP test peers as the CF's and the client's MSRP stacks");
  console.log(`\nServed user ${SERVED_USER} (mailbox ${mailboxNameOf(SERVED_USER)}).`);

  // 1. anchored, the client drops, the CF's messages are kept, the CF's BYE
  const chat: Chat = await rig.chatWhileAway(TEXTS, { byeHeaders: [BYE_REASON], interimGso: true });
  const gsos = await rig.folder(groupFolder(chat));
  assert.equal(gsos.length, 1, "the CF's BYE (cause=480) stores one GSO in the group session's folder");
  assert.match(gsoXml(gsos[0] as string), /lastfocussessionid="sip:focus@127\.0\.0\.1:\d+"/);
  assert.equal((await rig.folder(deferredFolder(chat))).length, chat.sent.length, "every CF message waits in the deferred queue");
  await rig.lifecycleMoved(chat, "client-absent -> inactive");
  const beforeRegister = await mailbox(rig);

  // 2. the client registers again; the delivery session; the client ends it
  await rig.deliveredTo(
    chat,
    "client-dd-uas.xml",
    { bye_reason: 'SIP;cause=200;text="Call completed"' },
    async ({ peer, client, invite }) => {
      assert.equal(header(invite, "contribution-id"), chat.contributionId, "the delivery INVITE names the group session");
      const got = await peer.waitForMessages(chat.sent.length + 1);
      assert.deepEqual(
        got.slice(0, chat.sent.length).map((m) => [m.contentType, Buffer.from(m.body).toString("utf8")]),
        chat.sent.map((s) => [s.contentType, s.body.toString("utf8")]),
        "every deferred item, in the order the CF sent them",
      );
      const final = got[chat.sent.length] as { contentType: string; body: Uint8Array };
      assert.equal(final.contentType, GSO_TYPE, "a GSO of the latest participants after the deferred items");
      assert.match(Buffer.from(final.body).toString("utf8"), /comm-addr="tel:\+16135551210"/);
      await waitFor(async () => (await rig.folder(deferredFolder(chat))).length === 0, 5000, 50, "the deferred queue emptied");
      await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
      const r = await client.done;
      assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
    },
  );

  console.log("\nOn the wire (SIP from the SIPp traces, MSRP as the test peers saw it; Kamailio <-> sidecar gRPC not shown):\n");
  printLadder(rig.ladder);
  console.log("\n(OPTIONS are the demo's triggers, sent straight to a SIPp to make it send its BYE; SIPp answers via Kamailio.)");

  console.log("\nIn the Message Store:");
  printMailbox(beforeRegister, rig.login().user, "After the CF's BYE, before the REGISTER");
  printMailbox(await mailbox(rig), rig.login().user, "After the delivery");

  console.log(`\nSidecar log (lifecycle transitions and BYE decisions), group session Call-ID ${chat.callId}:`);
  for (const l of rig.sidecar.logLines()) {
    if (l.callId !== chat.callId) continue;
    const at = String(l.timestamp).slice(11);
    if (l.msg === "group session lifecycle" && l.transition) {
      console.log(`  ${at}  group session lifecycle  ${String(l.transition)} (event ${String(l.event)})`);
    } else if (l.msg === "BYE decided") {
      console.log(
        `  ${at}  BYE decided  ${String(l.side)} side, ${String(l.mode)}, cause ${String(l.cause)}, Reason cause ${String(l.reasonCause)}, GSO ${String(l.gso)}`,
      );
    }
  }
}

async function main(): Promise<void> {
  const rig = await DeferredChatRig.start();
  try {
    await tell(rig);
    console.log("\nThe story completed: every kept message was delivered in order, the queue is empty.");
  } catch (err) {
    console.log("\nThe story did not complete. On the wire so far:\n");
    printLadder(rig.ladder);
    throw err;
  } finally {
    await rig.stop();
    console.log(
      `Stopped by PID: Kamailio ${rig.kamailio.pid}, sidecar ${rig.sidecar.pid}, Dovecot ${rig.dovecot.pid} (and every SIPp run and MSRP peer).`,
    );
  }
}

main().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
