// Seam between the SIP procedures and the MSRP media plane (RFC 4975).
// src/pf and src/grpc only see this interface; src/media/msrp-media-plane.ts
// implements it with the MSRP stack of src/msrp, and `NoMediaPlane` is the PF
// that stays out of the media path (proxy-only deployments, unit tests).
import { CpmError } from "../errors/catalogue.js";
import type { SetupAttribute } from "../msrp/setup.js";
import type { GroupSessionRef } from "./ports.js";

/** One MSRP endpoint of the PF, as it goes into an SDP (RFC 4975 8.1). */
export interface MediaLeg {
  host: string;
  port: number;
  /** The PF's complete a=path value for this leg (one msrp:// or msrps:// URI). */
  path: string;
  setup: SetupAttribute;
  tls: boolean;
}

export interface AnchorOfferRequest {
  session: GroupSessionRef;
  /** The SDP offer of the INVITE that came from the Controlling Function. */
  offerSdp: string;
  /** The session's allow-offline-storage (CPM); with config `recording` it enables 8.5.2 recording (BYE-B8). */
  allowOfflineStorage: boolean;
}

export interface AnchorOfferResult {
  /** The SDP offer to send on to the client(s): a=path, port and c= of the PF's client-facing leg. */
  clientOfferSdp: string;
  /** The PF's CF-facing leg: what its SDP answer towards the CF must carry. */
  cfLeg: MediaLeg;
}

/** What the SIP side knows of the session when it is recorded (8.5.2 session-info object). */
export interface RecordFacts {
  /** The latest participants (URIs). Default: none. */
  participants?: string[];
  subject?: string;
}

export interface MediaPlane {
  /** Anchors a new group session: allocates both legs, returns the SDP for the client side. */
  anchorOffer(req: AnchorOfferRequest): Promise<AnchorOfferResult>;
  /** The client's SDP answer (its 2xx): learns the client's path; returns the SDP answer for the CF. */
  anchorAnswer(sessionKey: string, clientAnswerSdp: string): string;
  /** 8.3.2.3 2.b.iv: MSRP SEND/IMDN from the clients on this session get 481 from now on. */
  refuseClientMedia(sessionKey: string): void;
  /** 8.3.2.3 2.d: record the CPM session (8.5.2) when allow-offline-storage or recording is on. */
  recordSession(sessionKey: string, facts?: RecordFacts): Promise<boolean>;
  /** 8.3.2.3 2.f: release sockets, timers, buffers, table entries; returns how many were released. */
  release(sessionKey: string): number;
}

/** The PF out of the media path: nothing to anchor, refuse, record or release. */
export class NoMediaPlane implements MediaPlane {
  async anchorOffer(): Promise<AnchorOfferResult> {
    throw new CpmError("CPM_ERR_MEDIA_DISABLED", "media.enabled=false");
  }
  anchorAnswer(): string {
    throw new CpmError("CPM_ERR_MEDIA_DISABLED", "media.enabled=false");
  }
  refuseClientMedia(): void {}
  async recordSession(): Promise<boolean> {
    return false;
  }
  release(): number {
    return 0;
  }
}
