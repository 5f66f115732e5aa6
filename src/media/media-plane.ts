// Seam between the SIP procedures and the MSRP media plane (RFC 4975). The
// MSRP stack, SDP anchoring and session recording arrive with the media-plane
// issue; until then the PF is not in the media path and there is nothing to
// refuse or release, which `NoMediaPlane` states explicitly.
export interface MediaPlane {
  /** 8.3.2.3 2.b.iv: MSRP SEND/IMDN from the clients on this session get 481 from now on. */
  refuseClientMedia(sessionKey: string): void;
  /** 8.3.2.3 2.d: record the CPM session (8.5.2) when allow-offline-storage or recording is on. */
  recordSession(sessionKey: string): Promise<boolean>;
  /** 8.3.2.3 2.f: release sockets, timers, buffers, table entries; returns how many were released. */
  release(sessionKey: string): number;
}

export class NoMediaPlane implements MediaPlane {
  refuseClientMedia(): void {}
  async recordSession(): Promise<boolean> {
    return false;
  }
  release(): number {
    return 0;
  }
}
