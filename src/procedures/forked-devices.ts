// BYE-B7 ("send a BYE to every connected client of the served user", TS
// 24.229) with a forked INVITE: the CF invited the served user, the S-CSCF
// forked the INVITE and more than one device answered 2xx. Kamailio gave the
// CF the first device's 2xx (one dialog, one participant); each further
// device's dialog is the PF's, held by its SIP UA. Pure: the record and the
// event in, the record out and what to do.
import { devicesIn, type ForkedDevice, type GroupSession, holdsForks, type SessionDialog } from "../session/group-session.js";

/** What a further device's 2xx asks for. */
export type ForkAction =
  /** RFC 3261 13.2.2.4: ACK this 2xx (each retransmission too: the PF is that dialog's UAC). */
  | { kind: "ackDevice"; device: ForkedDevice }
  /** One more client leg, towards this device's MSRP path (its SDP answer). */
  | { kind: "anchorDevice"; device: ForkedDevice }
  /** The dialog it answered is over (or unknown): the device is told at once (its dialog would hang otherwise). */
  | { kind: "byeDevice"; device: ForkedDevice; reason: string };

export interface ForkedAnswerResult {
  /** The record with the device added; the same object when nothing changed. */
  record: GroupSession;
  actions: ForkAction[];
  notes: string[];
}

const ENDED_REASON = 'SIP;cause=200;text="Call completed"';

/** A further device's 2xx to the INVITE of `callId` (Kamailio did not forward it). */
export function forkedAnswer(session: GroupSession, callId: string, device: ForkedDevice): ForkedAnswerResult {
  const dialog = session.dialogs.find((d) => d.callId === callId);
  if (dialog && device.clientTag === dialog.clientTag) {
    return { record: session, actions: [], notes: ["the first device's 2xx reported as a further one: ignored"] };
  }
  const ack: ForkAction = { kind: "ackDevice", device };
  if (!dialog || dialog.state === "terminated") {
    return {
      record: session,
      actions: [ack, { kind: "byeDevice", device, reason: ENDED_REASON }],
      notes: [`a further device answered a dialog that is ${dialog ? "over" : "unknown"}: ACKed and ended`],
    };
  }
  const known = dialog.forks?.find((f) => f.clientTag === device.clientTag);
  if (known) return { record: session, actions: [{ kind: "ackDevice", device: known }], notes: [] };
  const next: SessionDialog = { ...dialog, forks: [...(dialog.forks ?? []), device] };
  return {
    record: { ...session, dialogs: session.dialogs.map((d) => (d === dialog ? next : d)) },
    actions: [ack, { kind: "anchorDevice", device }],
    notes: [],
  };
}

export interface DeviceByeResult {
  /** The BYE goes to the PF's UA (HandleBye relay_to_ua): it holds further devices' dialogs. */
  relayToUa: boolean;
  /** One device's own BYE (its To tag in the forked INVITE); undefined for the network's BYE. */
  leaving?: string;
  /** No device of the served user is left in the dialog: the group session ends for him (the client ended it). */
  last: boolean;
  /** The record with the leaving device gone; the same object when nothing changed. */
  record: GroupSession;
}

/**
 * A BYE on `dialog` of `session`: the network's (side "network") or one
 * device's, named by its From tag. Only a dialog with further devices (now,
 * or the first device already gone) changes anything here.
 */
export function deviceBye(session: GroupSession, dialog: SessionDialog, side: "network" | "client", fromTag: string): DeviceByeResult {
  const forked = holdsForks(dialog) || dialog.clientLeft === true;
  if (!forked) return { relayToUa: false, last: false, record: session };
  if (side === "network") return { relayToUa: holdsForks(dialog), last: false, record: session };
  if (!devicesIn(dialog).includes(fromTag))
    return { relayToUa: true, leaving: fromTag, last: devicesIn(dialog).length === 0, record: session };
  const next: SessionDialog =
    fromTag === dialog.clientTag
      ? { ...dialog, clientLeft: true }
      : { ...dialog, forks: (dialog.forks ?? []).map((f) => (f.clientTag === fromTag ? { ...f, state: "terminated" as const } : f)) };
  return {
    relayToUa: true,
    leaving: fromTag,
    last: devicesIn(next).length === 0,
    record: { ...session, dialogs: session.dialogs.map((d) => (d === dialog ? next : d)) },
  };
}
