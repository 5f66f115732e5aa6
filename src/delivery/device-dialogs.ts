// BYE-B7 with a forked INVITE: the SIP UA's side of the served user's further
// devices (src/procedures/forked-devices.ts decides what happens). Their
// dialogs share the CF's Call-ID and From tag; the PF is their UAC (ACK,
// BYE), through Kamailio like every request of the UA. Kamailio relays the
// BYEs of a dialog with further devices here (HandleBye relay_to_ua): the
// network's BYE goes on to every device, and 200 OK goes back once they
// answered or timed out (8.3.2.3 2.c, 2.e); one device's BYE ends its part.
import type { Logger } from "../log/logger.js";
import type { ForkExecutor } from "../pf/participating-function.js";
import { devicesIn, dialogOf, type ForkedDevice, type GroupSession, type SessionDialog } from "../session/group-session.js";
import { type ProxiedDialog, throughProxy, towardsDevice, towardsFocus } from "../session/proxied-dialog.js";
import { header, headerValues, type SipMessage } from "../sip/message.js";
import { tagOf } from "../sip/name-addr.js";
import type { Dialog } from "../sip/ua.js";

export interface DeviceDialogsDeps {
  ua: { ack(dialog: Dialog): void; bye(dialog: Dialog, headers?: [string, string][]): Promise<number>; readonly outboundRoute: string };
  /** The record of a dialog, by Call-ID (as HandleBye left it). */
  sessions: { get(callId: string): GroupSession | undefined };
  media: { releaseDevice(sessionKey: string, deviceKey: string): number; release(sessionKey: string): number };
  /** How long the devices have to answer the network's BYE before the UA answers it anyway (below Kamailio's CPM_PF_BYE_CLIENT_TIMEOUT_MS). */
  byeTimeoutMs: number;
  log: Logger;
}

/** A device that did not answer within byeTimeoutMs (RFC 3261 408 semantics). */
const NO_ANSWER = 408;

export class DeviceDialogs implements ForkExecutor {
  constructor(private readonly deps: DeviceDialogsDeps) {}

  ack(session: GroupSession, callId: string, device: ForkedDevice): void {
    const dialog = this.forkDialog(session, callId, device);
    if (dialog) this.deps.ua.ack(dialog);
  }

  bye(session: GroupSession, callId: string, device: ForkedDevice, reason: string): void {
    const dialog = this.forkDialog(session, callId, device);
    if (!dialog) return;
    void this.deps.ua
      .bye(dialog, [["Reason", reason]])
      .then((status) => this.deps.log.info("further device's dialog ended", { callId, device: device.clientTag, reason, status }));
  }

  /** A BYE Kamailio relayed to the UA; false when its dialog has no further devices (someone else's BYE). */
  onBye(req: SipMessage, reply: (status: number, reason: string) => void): boolean {
    const callId = header(req, "call-id") ?? "";
    const session = this.deps.sessions.get(callId);
    const dialog = session ? dialogOf(session, callId) : undefined;
    if (!session || !dialog?.forks?.length) return false;
    const fromTag = tagOf(header(req, "from"));
    if (fromTag === dialog.cfTag) {
      void this.fanOut(session, dialog, headerValues(req, "reason"), reply);
      return true;
    }
    reply(200, "OK");
    this.deviceLeft(session, dialog, fromTag, headerValues(req, "reason"));
    return true;
  }

  /** BYE-B7: the network's BYE to every device still in the dialog; then 200 OK to its sender (BYE-B9). */
  private async fanOut(session: GroupSession, dialog: SessionDialog, reasons: string[], reply: (status: number, reason: string) => void) {
    const headers = reasons.map((r): [string, string] => ["Reason", r]);
    const devices = devicesIn(dialog);
    const statuses = await Promise.all(
      devices.map((tag) => {
        const d = towardsDevice(session, dialog, tag);
        return d ? this.withTimeout(this.deps.ua.bye(this.viaProxy(d), headers)) : Promise.resolve(0);
      }),
    );
    reply(200, "OK");
    this.deps.log.info("network BYE sent to every device of the served user (BYE-B7)", {
      callId: dialog.callId,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      devices: devices.map((tag, i) => `${tag}:${statuses[i]}`).join(" "),
    });
  }

  /** One device's BYE (answered): its leg goes; the last one's goes on to the focus (the served user left). */
  private deviceLeft(session: GroupSession, dialog: SessionDialog, tag: string, reasons: string[]): void {
    const callId = dialog.callId;
    const released = this.deps.media.releaseDevice(callId, tag);
    const fields = { callId, conversationId: session.conversationId, contributionId: session.contributionId, device: tag };
    if (devicesIn(dialog).length > 0) {
      this.deps.log.info("device left, the others stay in the group session (BYE-B7)", { ...fields, mediaReleased: released });
      return;
    }
    // the served user's last device: the CF's dialog ends as if that device had been its own (8.2.2.3)
    let toFocus: ProxiedDialog;
    try {
      toFocus = this.viaProxy(towardsFocus(session, dialog, { ending: true }));
    } catch (err) {
      this.deps.log.warn("last device left, no BYE to the focus possible", { ...fields, reason: String(err) });
      this.deps.media.release(callId);
      return;
    }
    void this.deps.ua
      .bye(
        toFocus,
        reasons.map((r): [string, string] => ["Reason", r]),
      )
      .then((status) => {
        const freed = this.deps.media.release(callId);
        this.deps.log.info("last device left: BYE to the focus for the served user", {
          ...fields,
          focusStatus: status,
          mediaReleased: freed,
        });
      });
  }

  private forkDialog(session: GroupSession, callId: string, device: ForkedDevice): ProxiedDialog | undefined {
    const dialog = dialogOf(session, callId);
    const d =
      dialog &&
      towardsDevice(session, { ...dialog, forks: [...(dialog.forks ?? []).filter((f) => f !== device), device] }, device.clientTag);
    if (!d) this.deps.log.warn("further device's dialog cannot be addressed", { callId, device: device.clientTag });
    return d && this.viaProxy(d);
  }

  private withTimeout(p: Promise<number>): Promise<number> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(NO_ANSWER), this.deps.byeTimeoutMs);
      p.then((status) => {
        clearTimeout(timer);
        resolve(status);
      });
    });
  }

  private viaProxy(d: ProxiedDialog): ProxiedDialog {
    return throughProxy(d, this.deps.ua.outboundRoute);
  }
}
