"""cpm-pf bridge: Kamailio (app_python3, native cfg) -> cpm-pf sidecar (gRPC).

Loaded by `modparam("app_python3", "load", CPM_PF_PYTHON_SCRIPT)` from
kamailio/cpm-pf.cfg. The cfg calls the methods of the object that mod_init()
returns through `python_exec("<method>"[, "<args>"])`; each method reads the
message and the settings through KSR.pv, makes ONE gRPC call with a
deadline and writes the answer into $var(cpm_pf_*) for the cfg to act on.
HandleBye and ObserveSession go over the process's Decide stream (unary
calls when the sidecar has no Decide, or CPM_PF_BRIDGE_UNARY=1); the others
are unary calls.

Where it runs: only in Kamailio's core async workers (async_task_route /
async_task_data), never in a SIP worker, so a slow or dead sidecar never
blocks SIP processing. The calls are synchronous on purpose: app_python3 of
Kamailio 5.6 keeps the GIL while the process is outside Python, so grpcio
background threads (futures, callbacks) would not progress in a Kamailio
process; the non-blocking part is done by the async framework instead.
The Decide stream is driven from the calling thread too (_DecisionStream);
its deadline is kept by one watchdog thread (_Watchdog), which runs while
the caller waits in gRPC.

Every method returns 1 (a 0 would end the cfg route, a negative value is
"false"); success or failure is in $var(cpm_pf_ok).

$var(...) set by handle_bye():
  cpm_pf_ok            1 = answer received, 0 = no answer (error/deadline)
  cpm_pf_error         why cpm_pf_ok is 0 (gRPC status and detail)
  cpm_pf_mode          proxy | b2bua | unspecified
  cpm_pf_side          network | client | unspecified
  cpm_pf_cause         participant_left | terminated | inactivity | network | unspecified
  cpm_pf_reason_cause  the reason-cause the decision used (int, 200 when absent)
  cpm_pf_reason        client_reason: Reason header value towards the client(s)
  cpm_pf_wait          1 when the BYE's sender is answered only after the clients
  cpm_pf_report        1 when the sidecar waits for ReportByeOutcome (recording,
                       media to release); 0: send none
  cpm_pf_session       session key to echo in ReportByeOutcome
  cpm_pf_relay_to_ua   1 when the BYE goes to the PF's SIP UA (CPM_PF_UA_ADDRESS):
                       the UA holds further devices' dialogs (BYE-B7)
  cpm_pf_gso           GSO storage state: not_required | stored | spooled | unspecified
  cpm_pf_gso_folder    IMAP folder of the GSO
  cpm_pf_notes         notes from the sidecar, "; "-joined
  cpm_pf_elapsed_ms    duration of the gRPC call (int, ms)
observe_*() set cpm_pf_ok, cpm_pf_error, cpm_pf_session, cpm_pf_participants,
  cpm_pf_anchor (1 = call anchor_media before relaying this INVITE),
  cpm_pf_answer (1 = the PF's UA answers it: a re-join, a session refresh)
  and cpm_pf_answer_ua (that UA, a sip:host:port URI; "" = CPM_PF_UA_ADDRESS).
affinity_key()         SIP worker, CPM_PF_GRPC_AFFINITY "served-user": sets
                       cpm_pf_affinity_key (the served user's key for the
                       INVITE's Record-Route). No gRPC.
report_bye_outcome() sets cpm_pf_ok, cpm_pf_error, cpm_pf_released.

Sidecar health (grpc.health.v1), shared by the Kamailio processes:
health_loop()          the rtimer process of route[CPM_PF_HEALTH], for ever:
                       every CPM_PF_HEALTH_INTERVAL_MS, Health.Check of the
                       PF service on every target (health_check()); htable cpmpf_health gets
                       <target> = 1 while it is not SERVING (unreachable, no
                       answer within the deadline, NOT_SERVING: a drain), 0
                       once it is again. Every decision tries the targets not
                       marked first (see _links_for); an operator takes one
                       out with `kamcmd htable.seti cpmpf_health <target>::out 1`
                       (and back with htable.delete). A marked target is
                       still tried, last, when no other answers.

MSRP media anchoring (PF as B2BUA in the media path):
anchor_media()         async worker, the CF's INVITE (or, client-initiated
                       session, the client's INVITE towards the conference
                       factory: the same code, "client" and "CF" swap roles
                       in what follows; cpm_pf_cf_* is always the PF's leg
                       facing the INVITE's sender): AnchorMedia; on success
                       the INVITE's body is replaced with the sidecar's (SDP
                       towards the client) through KSR.textops.set_body (a body
                       lump, applied when tm relays the request). Sets
                       cpm_pf_ok, cpm_pf_error, cpm_pf_sip_status (SIP status
                       named by the sidecar's cpm-sip-status trailer, 0 when
                       none), cpm_pf_session, cpm_pf_cf_host, cpm_pf_cf_port,
                       cpm_pf_cf_path, cpm_pf_cf_setup, cpm_pf_cf_tls,
                       cpm_pf_elapsed_ms.
rewrite_answer()       SIP worker, onreply_route of the anchored INVITE: NO
                       gRPC. Rewrites the 2xx's SDP for the CF from
                       $avp(cpm_pf_cf_*): m= port and protocol, c=, o=
                       address, a=path, a=setup of the MSRP media (session-level
                       c=/o= too); everything else (a=accept-types,
                       a=accept-wrapped-types, ...) stays the client's. Sets
                       cpm_pf_ok, cpm_pf_error.
report_media_answer()  async task: ReportMediaAnswer with the client's original
                       2xx. Sets cpm_pf_ok, cpm_pf_error.
report_invite_outcome() async task: ReportInviteOutcome (anchored INVITE without
                       a session). Sets cpm_pf_ok, cpm_pf_error.

Deferred delivery after registration (8.3.2.9.1.2):
report_registration()  async worker, the S-CSCF's third-party REGISTER (DD-1,
                       TS 24.229 5.4.1.7): ReportRegistration with the REGISTER
                       as received. Sets cpm_pf_ok, cpm_pf_error,
                       cpm_pf_accepted (1/0), cpm_pf_deliveries (int: group
                       sessions whose deferred delivery started),
                       cpm_pf_notes ("; "-joined, CR/LF removed),
                       cpm_pf_elapsed_ms, cpm_pf_reject_status (int: 0, or
                       the status to refuse the REGISTER with, 300..699,
                       e.g. 403 for an untrusted source) and
                       cpm_pf_reject_reason (its reason phrase, CR/LF
                       removed). The cfg answers 200 OK unless
                       cpm_pf_reject_status is set.
"""

import base64
import binascii
import os
import queue
import re
import sys
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_GEN = os.path.join(_HERE, "gen")  # generated by scripts/gen-python.sh
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

import KSR  # noqa: E402  (provided by app_python3)
import grpc  # noqa: E402  imported in the parent; channels are made after fork
from cpm.pf.v1 import pf_pb2 as pb  # noqa: E402
from cpm.pf.v1 import pf_pb2_grpc as pb_grpc  # noqa: E402
from health.v1 import health_pb2 as health_pb  # noqa: E402  grpc.health.v1
from health.v1 import health_pb2_grpc as health_grpc  # noqa: E402

try:  # grpcio's internal call API, for the Decide stream (see _DecisionStream)
    from grpc._cython import cygrpc as _cygrpc  # noqa: E402

    _STREAM_API = all(hasattr(_cygrpc, n) for n in (
        "SendInitialMetadataOperation", "ReceiveStatusOnClientOperation", "ReceiveInitialMetadataOperation",
        "SendMessageOperation", "ReceiveMessageOperation", "PropagationConstants", "build_census_context",
        "OperationType", "StatusCode")) and hasattr(getattr(_cygrpc, "Channel", None), "segregated_call")
except ImportError:
    _cygrpc = None
    _STREAM_API = False

# Set by route[CPM_PF_SETTINGS] of cpm-pf.cfg from CPM_PF_GRPC_TARGET,
# CPM_PF_GRPC_TLS_* and CPM_PF_DEADLINE_MS before each call.
_PV_TARGET = "$var(cpm_pf_grpc_target)"
_PV_FAILSAFE_DIR = "$var(cpm_pf_failsafe_dir)"
_PV_TLS = ("$var(cpm_pf_grpc_tls_ca)", "$var(cpm_pf_grpc_tls_cert)", "$var(cpm_pf_grpc_tls_key)", "$var(cpm_pf_grpc_tls_name)")
_PV_DEADLINE = "$var(cpm_pf_deadline_ms)"
_PV_AFFINITY = "$var(cpm_pf_grpc_affinity)"
_DEFAULT_TARGET = "127.0.0.1:50051"
# kamailio/cpm-pf.cfg: htable cpmpf_health (initval 0): <target> 1 = not serving (health_check), <target>::out 1 = taken out by the operator
_HEALTH_TABLE = "cpmpf_health"
_PF_SERVICE = "cpm.pf.v1.ParticipatingFunctionService"
_DEFAULT_DEADLINE_MS = 200

_MODE = {pb.MODE_PROXY: "proxy", pb.MODE_B2BUA: "b2bua"}
_MODE_ENUM = {"proxy": pb.MODE_PROXY, "b2bua": pb.MODE_B2BUA}
_SIDE = {pb.SIDE_NETWORK: "network", pb.SIDE_CLIENT: "client"}
_CAUSE = {
    pb.BYE_CAUSE_PARTICIPANT_LEFT: "participant_left",
    pb.BYE_CAUSE_TERMINATED: "terminated",
    pb.BYE_CAUSE_INACTIVITY: "inactivity",
    pb.BYE_CAUSE_NETWORK: "network",
}
_GSO = {
    pb.GsoStorage.STATE_NOT_REQUIRED: "not_required",
    pb.GsoStorage.STATE_STORED: "stored",
    pb.GsoStorage.STATE_SPOOLED: "spooled",
}

# Reconnect quickly after a sidecar restart; never wait for a connection (a
# call on a broken channel fails at once -> the cfg's fail-safe).
# (grpc.min_reconnect_backoff_ms is not set: gRPC core uses it as the floor of
# a connection attempt's timeout, and 100 ms made a busy sidecar's HTTP/2
# handshake time out for good; the default leaves the attempt 20 s, while each
# call still fails at its own deadline.)
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    # the first call after the sidecar is back must find the channel connected:
    # reconnect attempts every 100 ms at most while it is down (loopback / UDS)
    ("grpc.max_reconnect_backoff_ms", 100),
    ("grpc.enable_http_proxy", 0),
]

_CRLF = re.compile(r"[\r\n]+")

# A UA address from the sidecar ($du): "sip:host:port", optionally ;params.
_UA_URI = re.compile(r"^sip:[^\s<>\";]+:[0-9]{1,5}(;[^\s<>\"]*)?$", re.I)


def _sip_uri_or_empty(value):
    """`value` when it is a plain sip:host:port URI, else "" (the cfg's
    CPM_PF_UA_ADDRESS then): what the sidecar names becomes $du."""
    if value and _UA_URI.match(value):
        return value
    if value:
        KSR.warn("cpm-pf: ua_address %r is no sip:host:port URI: using CPM_PF_UA_ADDRESS\n" % value[:80])
    return ""


# Decide stream request kinds and the unary RPC each stands for.
_UNARY_OF = {
    "handle_bye": "HandleBye",
    "observe_session": "ObserveSession",
    "report_bye_outcome": "ReportByeOutcome",
}


def _sets(name, value):
    KSR.pv.sets("$var(" + name + ")", value)


def _seti(name, value):
    KSR.pv.seti("$var(" + name + ")", int(value))


def _set_bye_vars(ok, mode, side, cause, reason_cause, reason, wait, report, session, gso, gso_folder, notes, error, relay_to_ua=0):
    _sets("cpm_pf_mode", mode)
    _sets("cpm_pf_side", side)
    _sets("cpm_pf_cause", cause)
    _seti("cpm_pf_reason_cause", reason_cause)
    _sets("cpm_pf_reason", reason)
    _seti("cpm_pf_wait", wait)
    _seti("cpm_pf_report", report)
    _sets("cpm_pf_session", session)
    _seti("cpm_pf_relay_to_ua", relay_to_ua)
    _sets("cpm_pf_gso", gso)
    _sets("cpm_pf_gso_folder", gso_folder)
    _sets("cpm_pf_notes", notes)
    _sets("cpm_pf_error", error)
    _seti("cpm_pf_ok", ok)


def _read_pem(define, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise RuntimeError("%s %s: %s" % (define, path, err.strerror)) from err


def _open_channel(target, ca, cert, key, server_name):
    """A channel to the sidecar: plain (TCP or unix:), or TLS when a CA is
    configured, with Kamailio's own certificate when the sidecar asks for
    one (mutual TLS). The files are read once per process, when the channel
    is made; an unreadable one fails the call (-> fail-safe, logged)."""
    if not ca:
        return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
    if bool(cert) != bool(key):
        raise RuntimeError("CPM_PF_GRPC_TLS_CERT and CPM_PF_GRPC_TLS_KEY go together")
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read_pem("CPM_PF_GRPC_TLS_CA", ca),
        private_key=_read_pem("CPM_PF_GRPC_TLS_KEY", key) if key else None,
        certificate_chain=_read_pem("CPM_PF_GRPC_TLS_CERT", cert) if cert else None,
    )
    options = list(_CHANNEL_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, creds, options=options)


def _pv(spec, default=None):
    v = KSR.pv.get(spec)
    return default if v is None else v


def _raw_message():
    """$mb as bytes. base64 through the pv transformation keeps non-UTF-8
    bytes intact (KSR.pv.get returns str and would fail to decode them)."""
    b64 = KSR.pv.get("$(mb{s.encode.base64})")
    if b64:
        return base64.b64decode(b64)
    raw = KSR.pv.get("$mb") or ""
    return raw.encode("utf-8", "surrogateescape")


def _envelope(raw=None, source=None, transport=None):
    return pb.SipEnvelope(
        raw=_raw_message() if raw is None else raw,
        source=source if source is not None else "%s:%s" % (_pv("$si", ""), _pv("$sp", "")),
        transport=transport if transport is not None else _pv("$pr", ""),
    )


# CPM_PF_GRPC_AFFINITY "served-user": the key of a dialog's served user in
# the Record-Route the PF's proxy adds to its initial INVITE (";cpmpf=<key>"),
# echoed in every in-dialog request's Route and in the 2xx's Record-Route.
_RR_USER = re.compile(rb";cpmpf=([0-9a-f]{8})(?![0-9A-Za-z])")
_AFFINITY_TABLE = "cpmpf_affinity"  # Call-ID -> served user's key, for the reports from async tasks (autoexpire)


def _header_re(names):
    return re.compile(rb"^(?:" + names + rb")[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)


_TO = _header_re(rb"To|t")
_FROM = _header_re(rb"From|f")
_CONTACT = _header_re(rb"Contact|m")
_VISUAL = re.compile(r"[-.()]")


def _uri_of(value):
    """The URI of a From / To / Contact value (name-addr or addr-spec)."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0].strip()
    return value.split(";", 1)[0].strip()


def _identity_key(uri):
    """The served user as the sidecar's records compare it, in short
    (src/sip/public-identity.ts): a tel: number, or a sip: one with
    user=phone, as tel:<digits>; else scheme:user@host, host in lower case."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "tel":
        return "tel:" + _VISUAL.sub("", rest.split(";", 1)[0])
    if scheme not in ("sip", "sips"):
        return uri
    userinfo, _, hostpart = rest.rpartition("@")
    host = re.split(r"[;?]", hostpart, 1)[0].lower()
    params = hostpart[len(host):].lower().replace(" ", "")
    user = userinfo.split(":", 1)[0]
    if user.startswith("+") and ";user=phone" in params:
        return "tel:" + _VISUAL.sub("", user)
    return "%s:%s@%s" % (scheme, user, host) if user else "%s:%s" % (scheme, host)


def _served_user_key(raw):
    """The served user's key (CRC-32 of _identity_key, 8 hex digits) of the
    message `raw`: the one its Route / Record-Route carries (";cpmpf=<key>"),
    else, for an initial INVITE or a REGISTER, computed as the sidecar takes
    the served user (src/session/observe.ts servedUserOf): the To of a
    focus's INVITE (Contact ;isfocus) or of a third-party REGISTER, else the
    From. None for anything else."""
    head = (raw or b"").split(b"\r\n\r\n", 1)[0]
    m = _RR_USER.search(head)
    if m:
        return m.group(1).decode("ascii")
    method = head.split(b" ", 1)[0]
    if method not in (b"INVITE", b"REGISTER"):
        return None
    to = _TO.search(head)
    if method == b"INVITE" and to and re.search(rb";\s*tag=", to.group(1), re.I):
        return None  # in dialog, and not record-routed with a key
    contact = _CONTACT.search(head)
    focus = contact is not None and re.search(rb";\s*isfocus", contact.group(1), re.I) is not None
    hdr = to if method == b"REGISTER" or focus else _FROM.search(head)
    if hdr is None:
        return None
    uri = _uri_of(hdr.group(1).decode("utf-8", "replace"))
    return "%08x" % (binascii.crc32(_identity_key(uri).encode("utf-8", "replace")) & 0xFFFFFFFF)


def _marked(name, out=True):
    """Whether target `name` is marked in cpmpf_health: not serving (the
    health timer), or (`out`) taken out by the operator."""
    try:
        if KSR.htable.sht_get(_HEALTH_TABLE, name) == 1:
            return True
        return out and KSR.htable.sht_get(_HEALTH_TABLE, name + "::out") == 1
    except Exception:  # no htable cpmpf_health (an older cfg): nothing marked
        return False


def _describe(err):
    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        code = err.code()
        return "%s: %s" % (code.name if code else "UNKNOWN", err.details() or "")
    return "%s: %s" % (type(err).__name__, err)


def _log_fail(what, err_text, elapsed_ms, ref=None):
    # ref: what the call was about when the current message is not the SIP
    # message (async_task_data runs on a faked request)
    KSR.err("cpm-pf: %s failed after %d ms: %s [%s]\n"
            % (what, elapsed_ms, err_text, ref or "ci=" + str(_pv("$ci", "-"))))


_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.I | re.M)


def _call_id_of(raw):
    return "ci=" + (_raw_call_id(raw) or "-")


def _raw_call_id(raw):
    m = _CALL_ID.search(raw or b"")
    return m.group(1).decode("utf-8", "replace") if m else ""


_VARS_ANCHOR = (
    "cpm_pf_error", "cpm_pf_session", "cpm_pf_cf_host", "cpm_pf_cf_port",
    "cpm_pf_cf_path", "cpm_pf_cf_setup", "cpm_pf_cf_tls",
)


def _sip_status_of(err):
    """The cpm-sip-status trailer of a failed call (src/grpc/pf-service.ts), or 0."""
    try:
        for key, value in (err.trailing_metadata() or ()):
            if key == "cpm-sip-status":
                return int(value)
    except Exception:  # not an RpcError, or no trailers
        pass
    return 0


_SETUPS = ("active", "passive", "actpass", "holdconn")


def rewrite_msrp_sdp(body, leg):
    """The SDP answer of the client (of the CF, client-initiated session) with
    the PF's MSRP leg facing the INVITE's sender, `leg` (RFC 4975
    8.1, RFC 6135): in the first m=message media section, the port, protocol,
    a=path and a=setup; c= and o= addresses at session and media level. Other
    lines, a=accept-types and a=accept-wrapped-types included, are kept as
    they are. Works on an application/sdp body and on the SDP inside a
    multipart one (only SDP lines match). Raises ValueError when there is no
    MSRP media to rewrite."""
    host, port, path = leg["host"], int(leg["port"]), leg["path"]
    setup = leg["setup"] if leg["setup"] in _SETUPS else ""
    if not host or not port or not path or not path.startswith(("msrp://", "msrps://")):
        raise ValueError("no CF leg for this transaction")
    ipver = "IP6" if ":" in host else "IP4"
    proto = "TCP/TLS/MSRP" if leg["tls"] else "TCP/MSRP"
    eol = "\r\n" if "\r\n" in body else "\n"
    lines = body.split(eol)
    out = []
    section = "session"  # session | msrp (the first m=message) | other
    done_msrp = False
    saw_setup = False
    for line in lines:
        if line.startswith("m="):
            if section == "msrp" and not saw_setup and setup:
                _insert_setup(out, setup)
            m = re.match(r"^m=message \d+(?:/\d+)? (TCP(?:/TLS)?/MSRP)( .*)?$", line, re.I)
            if m and not done_msrp:
                section, done_msrp, saw_setup = "msrp", True, False
                line = "m=message %d %s%s" % (port, proto, m.group(2) or "")
            else:
                section = "other"
        elif section in ("session", "msrp") and line.startswith("c=IN "):
            line = "c=IN %s %s" % (ipver, host)
        elif section == "session" and line.startswith("o="):
            f = line.split(" ")
            if len(f) == 6:
                f[4], f[5] = ipver, host
                line = " ".join(f)
        elif section == "msrp" and line.startswith("a=path:"):
            line = "a=path:" + path
        elif section == "msrp" and line.startswith("a=setup:"):
            saw_setup = True
            if setup:
                line = "a=setup:" + setup
        elif section == "msrp" and line.startswith("--"):
            # end of the SDP part of a multipart body
            if not saw_setup and setup:
                _insert_setup(out, setup)
            section = "other"
        out.append(line)
    if not done_msrp:
        raise ValueError("no m=message TCP/MSRP media in the answer")
    if section == "msrp" and not saw_setup and setup:
        _insert_setup(out, setup)
    return eol.join(out)


def _insert_setup(out, setup):
    # after the last non-empty line of the media section
    i = len(out)
    while i > 0 and out[i - 1] == "":
        i -= 1
    out.insert(i, "a=setup:" + setup)


class _StreamBroken(Exception):
    pass


_DECIDE_METHOD = b"/cpm.pf.v1.ParticipatingFunctionService/Decide"


def _status_name(code):
    """grpc.StatusCode name of a numeric status code (cygrpc and the wire use the same numbers)."""
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return "UNKNOWN"


class _Watchdog:
    """Enforces the deadline of the Decide request in flight: the caller blocks
    in the completion queue with the GIL released, so this thread runs then and
    cancels the stream once the request is late (the stream is replaced by the
    next request). One per process; it polls instead of being notified per
    request, which would cost a thread wake-up per decision. Precision: TICK."""

    TICK = 0.005

    def __init__(self):
        self._armed = None  # (stream, request id, deadline): one assignment, atomic
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="cpm-pf-deadline", daemon=True).start()

    def arm(self, stream, req_id, deadline):
        self._armed = (stream, req_id, deadline)

    def disarm(self):
        self._armed = None

    def _run(self):
        while True:
            time.sleep(self.TICK)
            armed = self._armed
            if armed is not None and time.monotonic() >= armed[2]:
                armed[0].expire(armed[1])


class _DecisionStream:
    """One Decide stream (HandleBye / ObserveSession on a long-lived bidi
    stream: no HTTP/2 stream, headers and trailers per decision on either end),
    driven from the calling thread.

    grpcio's public stream API runs a request-consumer thread and needs a
    reader thread: four thread hand-offs per decision, 305 us of Python CPU per
    decision measured on the bench machine. Here the caller posts the send and
    the receive on the call and polls the call's own completion queue, as
    grpcio's blocking unary path does (cygrpc SegregatedCall): 86 us. That API
    is grpcio's internal one (unchanged since grpcio 1.20; Debian 12 ships
    1.51); _STREAM_API says whether it is there, and without it the bridge
    makes unary calls. Requests are strictly one at a time (one caller per
    process)."""

    def __init__(self, channel, watchdog):
        ops = (
            ((_cygrpc.SendInitialMetadataOperation((), 0),), "metadata"),
            ((_cygrpc.ReceiveStatusOnClientOperation(0),), "status"),
            ((_cygrpc.ReceiveInitialMetadataOperation(0),), "initial"),
        )
        self._call = channel._channel.segregated_call(
            _cygrpc.PropagationConstants.GRPC_PROPAGATE_DEFAULTS, _DECIDE_METHOD,
            None, None, (), None, ops, _cygrpc.build_census_context())
        # batches posted and not yet completed (by tag); the call and its queue
        # are freed once none is left, so every one is consumed (close())
        self._pending = {"metadata", "status", "initial"}
        self._watchdog = watchdog
        self._next_id = 0
        self._ended = None  # why the stream is over, once it is
        self._expired = None  # id of the request whose deadline cancelled the stream
        self.answered = False  # a response came on this stream

    def alive(self):
        return self._ended is None and self._expired is None

    def expire(self, req_id):
        """Watchdog thread: request req_id is past its deadline. Should the
        caller have got its answer and moved on meanwhile, the cancel ends the
        next request's stream, which is then retried on a fresh one
        (CpmPfBridge._decide), not failed as late."""
        if req_id == self._next_id and self._expired is None:
            self._expired = req_id
            self._call.cancel(_cygrpc.StatusCode.cancelled, "cpm-pf bridge: decision deadline")

    def request(self, req, timeout):
        """Sends req (a DecideRequest without id); returns its DecideResponse.
        Raises _StreamBroken, or queue.Empty when the deadline passed."""
        if not self.alive():
            raise _StreamBroken(self._ended or "CANCELLED: a late answer ended the stream")
        self._next_id += 1
        req.id = self._next_id
        self._watchdog.arm(self, req.id, time.monotonic() + timeout)
        try:
            return self._exchange(req.SerializeToString(), req.id)
        finally:
            self._watchdog.disarm()

    def _post(self, op, tag):
        if self._call.operate((op,), tag):
            self._pending.add(tag)
            return True
        return False

    def _next(self):
        event = self._call.next_event()
        self._pending.discard(event.tag)
        return event

    def _exchange(self, payload, req_id):
        if not (self._post(_cygrpc.SendMessageOperation(payload, 0), "send")
                and self._post(_cygrpc.ReceiveMessageOperation(0), "receive")):
            self._ended = "UNAVAILABLE: Decide stream closed"
            self.close()
            raise _StreamBroken(self._ended)
        response = None
        while "send" in self._pending or "receive" in self._pending:
            for op in self._next().batch_operations:
                kind = op.type()
                if kind == _cygrpc.OperationType.receive_message:
                    data = op.message()
                    if data is None:
                        continue  # end of stream: the status follows
                    r = pb.DecideResponse.FromString(data)
                    if r.id == req_id:
                        response = r
                    else:  # a stale answer: read on
                        self._post(_cygrpc.ReceiveMessageOperation(0), "receive")
                elif kind == _cygrpc.OperationType.receive_status_on_client:
                    self._ended = "%s: %s" % (_status_name(op.code()), op.details() or "Decide stream ended")
        if response is not None:
            self.answered = True
            return response
        late = self._expired == req_id
        self._ended = self._ended or ("DEADLINE_EXCEEDED" if late else "UNAVAILABLE: Decide stream ended by the sidecar")
        self.close()
        if late:
            raise queue.Empty()
        raise _StreamBroken(self._ended)

    def close(self):
        """Ends the stream (if it is not over) and consumes what is left on its
        queue, so that grpcio frees the call."""
        if self._pending:
            self._call.cancel(_cygrpc.StatusCode.cancelled, "cpm-pf bridge: stream closed")
            while self._pending:
                self._next()
        self._ended = self._ended or "CANCELLED: closed"


# With several sidecars in CPM_PF_GRPC_TARGET ("host:port,host:port", in
# order of preference), one that failed (unreachable, or no answer within its
# share of the deadline) is tried after the others for this long.
_DOWN_FOR_S = 2.0

# Failures that say nothing about the request: another sidecar may answer it.
_FAILOVER = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


def _share(remaining, i, up):
    """The budget (s) of the i-th sidecar tried when `remaining` is left of
    the deadline and the first `up` of the list are up: each up one but the
    last gets half of it, so that one that hangs leaves time for the next
    (each sidecar's store waits shrink to fit, see budget_ms); the last up
    one gets all of it. The ones after it (failed lately, or marked by the
    health timer) are tried only with what an up one left: a sidecar that is
    down answers at once (connection refused) or not at all, and halving the
    one up sidecar's budget for it turns slow answers into fail-safes."""
    return remaining / 2 if i < up - 1 else remaining


def _failure_text(failures, up):
    """Why no sidecar answered, from the (i, error text) of each one tried:
    the first up sidecar's (the one that should have answered; a down one
    tried after it, refusing the connection at once, says only that it is
    down), else the last one's."""
    for i, text in failures:
        if i < up:
            return text
    return failures[-1][1] if failures else "UNAVAILABLE: no sidecar"


class _Link:
    """The channel, stub and Decide stream to one sidecar (one target), in
    one Kamailio process; made lazily in the process that uses it (a channel
    made before fork is unusable)."""

    def __init__(self, target):
        self.target = target  # (address, TLS CA, cert, key, server name)
        self.channel = None
        self.stub = None
        self.stream = None
        self.watchdog = None
        self.down_until = 0.0
        # False once this sidecar answered Decide with UNIMPLEMENTED (older
        # sidecar): unary calls from then on. Unary calls too when grpcio
        # lacks the call API the stream uses, or CPM_PF_BRIDGE_UNARY=1.
        self.use_stream = _STREAM_API and os.environ.get("CPM_PF_BRIDGE_UNARY", "") != "1"

    def stub_for(self):
        if self.stub is None:
            self.channel = _open_channel(*self.target)
            self.stub = pb_grpc.ParticipatingFunctionServiceStub(self.channel)
            self.stream = None
        return self.stub

    def health(self, budget):
        """Health.Check of the PF service on this sidecar: (serving, what it
        answered or why it failed)."""
        try:
            self.stub_for()  # makes the channel
            r = health_grpc.HealthStub(self.channel).Check(health_pb.HealthCheckRequest(service=_PF_SERVICE), timeout=budget, wait_for_ready=False)
        except Exception as err:  # unreachable, no answer in time: not serving
            text = _describe(err)
            self.forget_unreachable(text)
            return False, text
        return r.status == health_pb.HealthCheckResponse.SERVING, health_pb.HealthCheckResponse.ServingStatus.Name(r.status)

    def forget_unreachable(self, error_text):
        """After UNAVAILABLE the channel is dropped: the next call makes a
        fresh one, which connects when that call starts. A kept channel stays
        in TRANSIENT_FAILURE until its own reconnect succeeds (pick_first,
        gRFC A62) and fails every call meanwhile, also after the sidecar is
        back; a fresh channel to a sidecar still down fails at once
        (connection refused), so the fail-safe stays immediate."""
        if not error_text.startswith("UNAVAILABLE"):
            return
        self.close()

    def stream_for(self):
        self.stub_for()
        if self.stream is not None and not self.stream.alive():
            self.drop_stream()
        if self.stream is None:
            if self.watchdog is None:
                self.watchdog = _Watchdog()
            self.stream = _DecisionStream(self.channel, self.watchdog)
        return self.stream

    def drop_stream(self):
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception as err:  # a broken call: nothing more to free
                KSR.err("cpm-pf: closing the Decide stream: %s\n" % _describe(err))

    def close(self):
        self.drop_stream()
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception as err:  # already broken: nothing more to free
                KSR.err("cpm-pf: closing the gRPC channel: %s\n" % _describe(err))
        self.channel = None
        self.stub = None


class CpmPfBridge:
    def __init__(self):
        self._pid = None
        self._links = {}  # target -> _Link, in this process
        self._last_sip_status = 0

    # -- process lifecycle -------------------------------------------------

    def child_init(self, rank):
        # Nothing to connect here: the channels are made lazily in the process
        # that uses them (see _links_for()).
        return 0

    def _settings(self):
        """The targets (each: address plus TLS files; a reloaded script may
        change either) in order of preference, and the deadline (s)."""
        tls = tuple(_pv(spec) or "" for spec in _PV_TLS)
        addresses = [a.strip() for a in (_pv(_PV_TARGET) or _DEFAULT_TARGET).split(",") if a.strip()]
        targets = [(a,) + tls for a in (addresses or [_DEFAULT_TARGET])]
        try:
            deadline_ms = int(_pv(_PV_DEADLINE, _DEFAULT_DEADLINE_MS))
        except (TypeError, ValueError):
            deadline_ms = _DEFAULT_DEADLINE_MS
        if deadline_ms <= 0:
            deadline_ms = _DEFAULT_DEADLINE_MS
        return targets, deadline_ms / 1000.0

    def _links_for(self, targets, key=None):
        """This process's links to `targets`: the ones up first (in the
        configured order, or, with an affinity `key` (see _affinity),
        starting at the one it hashes to, so that every request of a dialog
        goes to the same sidecar: the one holding its MSRP legs), then the
        ones that failed lately or the health timer marked. Returns (links,
        how many of them are up)."""
        pid = os.getpid()
        if self._pid != pid:  # a fork: the parent's links are unusable
            self._links = {}
            self._pid = pid
        for target in [t for t in self._links if t not in targets]:
            self._links.pop(target).close()  # another target (script reloaded)
        links = [self._links.setdefault(t, _Link(t)) for t in targets]
        if key and len(links) > 1:
            at = binascii.crc32(key.encode("utf-8", "replace")) % len(links)
            links = links[at:] + links[:at]
        if len(links) < 2:
            return links, len(links)
        now = time.monotonic()
        up = [ln for ln in links if ln.down_until <= now and not _marked(ln.target[0])]
        return up + [ln for ln in links if ln not in up], len(up)

    def _affinity(self, key, raw):
        """What the target list is rotated by (CPM_PF_GRPC_AFFINITY): None
        ("", in order); the Call-ID ("call-id": `key`, default the current
        message's); the served user's key ("served-user": of `raw`, default
        the current message, see _served_user_key; kept by Call-ID for a
        while, so that a report from an async task, which has only the
        session key, goes where its request went)."""
        mode = _pv(_PV_AFFINITY)
        call_id = key if key is not None else _pv("$ci", "")
        if mode == "call-id":
            return call_id
        if mode != "served-user":
            return None
        if raw is None and key is None:
            raw = _raw_message()
        user = _served_user_key(raw) if raw is not None else None
        try:
            if user:
                KSR.htable.sht_sets(_AFFINITY_TABLE, call_id, user)
            elif call_id:
                user = KSR.htable.sht_get(_AFFINITY_TABLE, call_id)
        except Exception:  # no htable cpmpf_affinity (an older cfg): by Call-ID then
            pass
        return user if isinstance(user, str) and user else call_id

    def affinity_key(self, msg, args=None):
        """SIP worker, a CPM INVITE before route[CPM_PF_OBSERVE] record-routes
        it (CPM_PF_GRPC_AFFINITY "served-user"): $var(cpm_pf_affinity_key) =
        the served user's key (see _served_user_key), "" when there is none.
        No gRPC."""
        _sets("cpm_pf_affinity_key", _served_user_key(_raw_message()) or "")
        return 1

    def _each_link(self, attempt, key=None, raw=None):
        """Runs attempt(link, budget_s) -> (response | None, error text) on
        the sidecars in order until one answers, or fails for a reason that is
        the request's, within the one deadline (shared out by _share).
        `key`: the dialog's Call-ID, `raw`: the message when it is not the
        current one (affinity, see _affinity).
        Returns (response | None, error text, elapsed ms)."""
        t0 = time.monotonic()
        self._last_sip_status = 0
        targets, timeout = self._settings()
        links, up = self._links_for(targets, self._affinity(key, raw) if len(targets) > 1 else None)
        resp, text = None, "UNAVAILABLE: no sidecar"
        failures = []
        for i, link in enumerate(links):
            remaining = timeout - (time.monotonic() - t0)
            if remaining <= 0:
                break
            budget = _share(remaining, i, up)
            resp, text = attempt(link, budget)
            if resp is not None:
                link.down_until = 0.0
                break
            failures.append((i, text))
            if not text.startswith(_FAILOVER):
                break  # the sidecar decided (e.g. INVALID_ARGUMENT): another would decide the same
            link.down_until = time.monotonic() + _DOWN_FOR_S
            if i < len(links) - 1:
                KSR.warn("cpm-pf: sidecar %s failed (%s): trying %s\n" % (link.target[0], text, links[i + 1].target[0]))
        if resp is None and failures and text.startswith(_FAILOVER):
            text = _failure_text(failures, up)
        return resp, text, int((time.monotonic() - t0) * 1000)

    def _call(self, rpc_name, request, key=None, raw=None):
        """One unary call within the configured deadline (on the next sidecar
        when one fails, see _each_link). Returns (response | None, error text,
        elapsed ms); on error self._last_sip_status is the sidecar's
        cpm-sip-status trailer (or 0)."""
        return self._each_link(lambda link, budget: self._unary_on(link, rpc_name, request, budget), key, raw)

    def _unary_on(self, link, rpc_name, request, budget):
        try:
            rpc = getattr(link.stub_for(), rpc_name)
            return rpc(request, timeout=budget, wait_for_ready=False), ""
        except Exception as err:  # any failure -> the next sidecar, or the fail-safe in the cfg
            self._last_sip_status = _sip_status_of(err)
            text = _describe(err)
            link.forget_unreachable(text)
            return None, text

    def _decide(self, kind, request, key=None, raw=None):
        """HandleBye / ObserveSession / ReportByeOutcome over the Decide
        stream; the same (response | None, error text, elapsed ms) as _call().
        Falls back to the unary RPC when the sidecar does not implement Decide."""
        return self._each_link(lambda link, budget: self._decide_on(link, kind, request, budget), key, raw)

    def _decide_on(self, link, kind, request, budget):
        unary_name = _UNARY_OF[kind]
        if not link.use_stream:
            return self._unary_on(link, unary_name, request, budget)
        t0 = time.monotonic()
        # A stream that answered before and then broke while idle (the sidecar
        # restarted) is only found out when the next request fails: Python
        # threads do not run between calls here. That request is retried once
        # on a fresh stream within the same budget, so the first decision
        # of each Kamailio process after a sidecar restart is not a fail-safe.
        # Cost: a request the old sidecar finished just before dying may be
        # decided twice (at most one extra GSO).
        for attempt in (1, 2):
            try:
                remaining = budget - (time.monotonic() - t0)
                if remaining <= 0:
                    raise queue.Empty()
                stream = link.stream_for()
                # budget_ms: the sidecar keeps its store waits within this link's share
                r = stream.request(pb.DecideRequest(budget_ms=max(1, int(remaining * 1000)), **{kind: request}), remaining)
                break
            except queue.Empty:
                return None, "DEADLINE_EXCEEDED: no answer on the Decide stream"
            except _StreamBroken as err:
                link.drop_stream()
                text = str(err)
                if text.startswith("UNIMPLEMENTED"):
                    link.use_stream = False
                    return self._unary_on(link, unary_name, request, budget - (time.monotonic() - t0))
                if attempt == 1 and stream.answered:
                    continue
                link.forget_unreachable(text)
                return None, text
            except Exception as err:  # any failure -> the next sidecar, or the fail-safe in the cfg
                link.drop_stream()
                text = _describe(err)
                link.forget_unreachable(text)
                return None, text
        which = r.WhichOneof("response")
        if which == "error":
            self._last_sip_status = r.error.sip_status
            return None, "%s: %s" % (_status_name(r.error.grpc_code), r.error.message)
        if which != kind:
            return None, "INTERNAL: Decide answered %s to %s" % (which, kind)
        return getattr(r, kind), ""

    # -- 8.3.2.3: BYE ------------------------------------------------------

    def handle_bye(self, msg, args=None):
        # Every $var below is set on every path: an async worker's $vars
        # outlive the task, and a hook must never see the previous BYE's.
        try:
            request = pb.HandleByeRequest(bye=_envelope())
        except Exception as err:
            resp, err, ms = None, _describe(err), 0
        else:
            resp, err, ms = self._decide("handle_bye", request)
        _seti("cpm_pf_elapsed_ms", ms)
        if resp is None:
            _set_bye_vars(0, "", "", "", 0, "", 1, 0, "", "", "", "", err)
            _log_fail("HandleBye", err, ms)
            return 1
        _set_bye_vars(
            1,
            _MODE.get(resp.mode, "unspecified"),
            _SIDE.get(resp.side, "unspecified"),
            _CAUSE.get(resp.cause, "unspecified"),
            resp.reason_cause,
            # a header value: never let CR/LF through into the SIP message
            _CRLF.sub(" ", resp.client_reason).strip(),
            1 if resp.wait_for_clients else 0,
            1 if resp.report_outcome else 0,
            resp.session_key,
            _GSO.get(resp.gso.state, "unspecified"),
            resp.gso.folder,
            "; ".join(resp.notes),
            "",
            1 if resp.relay_to_ua else 0,
        )
        return 1

    def journal_bye(self, msg, args=None):
        """The fail-safe relays this BYE unchanged; it is also written to
        CPM_PF_FAILSAFE_DIR, from which the sidecar replays it when it is back
        (8.3.2.3: the GSO is stored even so). Sets $var(cpm_pf_journaled):
        1 written, 0 journal off, -1 could not be written (logged)."""
        directory = _pv(_PV_FAILSAFE_DIR) or ""
        if not directory:
            _seti("cpm_pf_journaled", 0)
            return 1
        try:
            name = _journal_bye(directory, pb.HandleByeRequest(bye=_envelope()), int(time.time() * 1000))
        except Exception as err:  # the BYE still goes on: counted and logged by the cfg
            _seti("cpm_pf_journaled", -1)
            KSR.err("cpm-pf: fail-safe BYE not journaled in %s: %s [ci=%s]\n" % (directory, _describe(err), _pv("$ci", "-")))
            return 1
        _seti("cpm_pf_journaled", 1)
        KSR.info("cpm-pf: fail-safe BYE journaled as %s [ci=%s]\n" % (name, _pv("$ci", "-")))
        return 1

    def report_bye_outcome(self, msg, args=None):
        """args: "<status>|<mode>|<session key>" (from $async(data))."""
        _seti("cpm_pf_ok", 0)
        _sets("cpm_pf_error", "")
        _seti("cpm_pf_released", 0)
        try:
            status, mode, session_key = (args or "").split("|", 2)
            request = pb.ReportByeOutcomeRequest(
                session_key=session_key,
                status_code=int(status or 0),
                mode=_MODE_ENUM.get(mode, pb.MODE_UNSPECIFIED),
            )
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            _log_fail("ReportByeOutcome", _describe(err), 0, "data=" + str(args))
            return 1
        resp, err, ms = self._decide("report_bye_outcome", request, session_key)
        if resp is None:
            _sets("cpm_pf_error", err)
            _log_fail("ReportByeOutcome", err, ms, "session=" + session_key)
            return 1
        _seti("cpm_pf_released", 1 if resp.released else 0)
        _seti("cpm_pf_ok", 1)
        return 1

    def report_invite_outcome(self, msg, args=None):
        """args: "<status>|<session key>" (from $async(data))."""
        _seti("cpm_pf_ok", 0)
        _sets("cpm_pf_error", "")
        try:
            status, session_key = (args or "").split("|", 1)
            request = pb.ReportInviteOutcomeRequest(session_key=session_key, status_code=int(status or 0))
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            _log_fail("ReportInviteOutcome", _describe(err), 0, "data=" + str(args))
            return 1
        resp, err, ms = self._call("ReportInviteOutcome", request, session_key)
        if resp is None:
            _sets("cpm_pf_error", err)
            _log_fail("ReportInviteOutcome", err, ms, "session=" + session_key)
            return 1
        _seti("cpm_pf_ok", 1)
        return 1

    # -- sidecar health -----------------------------------------------------

    def health_loop(self, msg, args=None):
        """Runs health_check() every `args` ms, in the process of its own the
        cfg gives it; never returns."""
        try:
            interval = max(0.05, int(args or "1000") / 1000.0)
        except ValueError:
            interval = 1.0
        while True:
            started = time.monotonic()
            try:
                self.health_check()
            except Exception as err:  # a round that failed: the next one tries again
                KSR.err("cpm-pf: sidecar health round failed: %s\n" % _describe(err))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def health_check(self):
        """Marks in cpmpf_health which sidecars are not serving (see the
        module docstring); logs each change."""
        targets, deadline = self._settings()
        pid = os.getpid()
        if self._pid != pid:
            self._links = {}
            self._pid = pid
        for target in targets:
            link = self._links.setdefault(target, _Link(target))
            serving, what = link.health(deadline)
            name = target[0]
            was = _marked(name, out=False)
            try:
                KSR.htable.sht_seti(_HEALTH_TABLE, name, 0 if serving else 1)
            except Exception as err:  # no htable cpmpf_health: nothing shared
                KSR.err("cpm-pf: health of sidecar %s not recorded: %s\n" % (name, _describe(err)))
                continue
            if was and serving:
                KSR.info("cpm-pf: sidecar %s is serving again: decisions go to it\n" % name)
            elif not was and not serving:
                KSR.warn("cpm-pf: sidecar %s is not serving (%s): decisions go to the others first\n" % (name, what))
        return 1

    # -- session facts: INVITE, its 2xx, conference NOTIFY -----------------

    def observe(self, msg, args=None):
        """ObserveSession with the current request."""
        try:
            request = pb.ObserveSessionRequest(message=_envelope())
        except Exception as err:
            return self._observed(None, _describe(err), 0)
        return self._observed(*self._decide("observe_session", request))

    def observe_data(self, msg, args=None):
        """ObserveSession with a message handed over by async_task_data:
        args = "<base64 of the message>|<source ip:port>|<transport>"."""
        try:
            b64, source, transport = (args or "").split("|", 2)
            raw = base64.b64decode(b64)
            request = pb.ObserveSessionRequest(message=_envelope(
                raw=raw, source=source, transport=transport))
        except Exception as err:
            return self._observed(None, _describe(err), 0, "data=" + str(args)[:80])
        return self._observed(*self._decide("observe_session", request, _raw_call_id(raw), raw), ref=_call_id_of(raw))

    def _observed(self, resp, err, ms, ref=None):
        _seti("cpm_pf_ok", 0)
        _sets("cpm_pf_error", "")
        _sets("cpm_pf_session", "")
        _seti("cpm_pf_participants", 0)
        _seti("cpm_pf_anchor", 0)
        _seti("cpm_pf_answer", 0)
        _sets("cpm_pf_answer_ua", "")
        if resp is None:
            _sets("cpm_pf_error", err)
            _log_fail("ObserveSession", err, ms, ref)
            return 1
        _sets("cpm_pf_session", resp.session_key)
        _seti("cpm_pf_participants", resp.participant_count)
        _seti("cpm_pf_anchor", 1 if resp.anchor_media else 0)
        _seti("cpm_pf_answer", 1 if resp.answer_by_pf else 0)
        if resp.answer_by_pf:
            # the UA that answers: this sidecar's, or the served user's slot holder's
            _sets("cpm_pf_answer_ua", _sip_uri_or_empty(resp.ua_address))
        _seti("cpm_pf_ok", 1)
        return 1

    # -- MSRP media anchoring ----------------------------------------------

    def anchor_media(self, msg, args=None):
        """AnchorMedia with the current INVITE (the focus' or, client-initiated,
        the client's); replaces its body on success. resp.cf_leg is the PF's
        leg facing the INVITE's sender, kept in $var(cpm_pf_cf_*)."""
        _seti("cpm_pf_ok", 0)
        _seti("cpm_pf_sip_status", 0)
        _seti("cpm_pf_elapsed_ms", 0)
        for name in _VARS_ANCHOR:
            _sets(name, "")
        try:
            request = pb.AnchorMediaRequest(invite=_envelope())
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            _log_fail("AnchorMedia", _describe(err), 0)
            return 1
        resp, err, ms = self._call("AnchorMedia", request)
        _seti("cpm_pf_elapsed_ms", ms)
        if resp is None:
            _sets("cpm_pf_error", err)
            _seti("cpm_pf_sip_status", self._last_sip_status)
            _log_fail("AnchorMedia", err, ms)
            return 1
        leg = resp.cf_leg
        try:
            body = resp.client_body.decode("utf-8")
            ctype = _CRLF.sub(" ", resp.client_content_type).strip()
            if not body or not ctype or not leg.path or not leg.port:
                raise ValueError("incomplete AnchorMedia answer")
            if KSR.textops.set_body(body, ctype) < 0:
                raise RuntimeError("set_body failed")
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            _log_fail("AnchorMedia (apply)", _describe(err), ms)
            return 1
        _sets("cpm_pf_session", resp.session_key)
        _sets("cpm_pf_cf_host", _CRLF.sub("", leg.host))
        _seti("cpm_pf_cf_port", leg.port)
        _sets("cpm_pf_cf_path", _CRLF.sub("", leg.path))
        _sets("cpm_pf_cf_setup", _CRLF.sub("", leg.setup))
        _seti("cpm_pf_cf_tls", 1 if leg.tls else 0)
        _seti("cpm_pf_ok", 1)
        return 1

    def rewrite_answer(self, msg, args=None):
        """Local (no gRPC): the 2xx's SDP gets the PF's leg facing the INVITE's
        sender ($avp(cpm_pf_cf_*): the CF-facing leg, or the client-facing one
        when the client initiated the session and the 2xx is the CF's)."""
        _seti("cpm_pf_ok", 0)
        _sets("cpm_pf_error", "")
        try:
            leg = {
                "host": _pv("$avp(cpm_pf_cf_host)", ""),
                "port": int(_pv("$avp(cpm_pf_cf_port)", 0)),
                "path": _pv("$avp(cpm_pf_cf_path)", ""),
                "setup": _pv("$avp(cpm_pf_cf_setup)", ""),
                "tls": str(_pv("$avp(cpm_pf_cf_tls)", 0)) == "1",
            }
            b64 = KSR.pv.get("$(rb{s.encode.base64})")
            body = base64.b64decode(b64).decode("utf-8") if b64 else ""
            ctype = _pv("$hdr(Content-Type)", "") or "application/sdp"
            new_body = rewrite_msrp_sdp(body, leg)
            if KSR.textops.set_body(new_body, ctype) < 0:
                raise RuntimeError("set_body failed")
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            KSR.err("cpm-pf: 2xx SDP rewrite failed: %s [ci=%s]\n" % (_describe(err), _pv("$ci", "-")))
            return 1
        _seti("cpm_pf_ok", 1)
        return 1

    def report_media_answer(self, msg, args=None):
        """args: "<session key>|<base64 of the 2xx>|<source ip:port>|<transport>[|forked]";
        "forked": a further device's 2xx that Kamailio did not forward (BYE-B7)."""
        _seti("cpm_pf_ok", 0)
        _sets("cpm_pf_error", "")
        raw = b""
        try:
            session_key, b64, source, rest = (args or "").split("|", 3)
            transport, _, flag = rest.partition("|")
            raw = base64.b64decode(b64)
            request = pb.ReportMediaAnswerRequest(
                session_key=session_key,
                answer=_envelope(raw=raw, source=source, transport=transport),
                forked=flag == "forked")
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            _log_fail("ReportMediaAnswer", _describe(err), 0, "data=" + str(args)[:80])
            return 1
        resp, err, ms = self._call("ReportMediaAnswer", request, session_key, raw)
        if resp is None:
            _sets("cpm_pf_error", err)
            _log_fail("ReportMediaAnswer", err, ms, _call_id_of(raw))
            return 1
        _seti("cpm_pf_ok", 1)
        return 1

    # -- 8.3.2.9.1.2: deferred delivery after registration -------------------

    def report_registration(self, msg, args=None):
        """ReportRegistration (DD-1) with the current REGISTER."""
        # every $var on every path: an async worker's $vars outlive the task
        _seti("cpm_pf_ok", 0)
        _sets("cpm_pf_error", "")
        _seti("cpm_pf_accepted", 0)
        _seti("cpm_pf_deliveries", 0)
        _sets("cpm_pf_notes", "")
        _seti("cpm_pf_elapsed_ms", 0)
        _seti("cpm_pf_reject_status", 0)
        _sets("cpm_pf_reject_reason", "")
        try:
            request = pb.ReportRegistrationRequest(register=_envelope())
        except Exception as err:
            _sets("cpm_pf_error", _describe(err))
            _log_fail("ReportRegistration", _describe(err), 0)
            return 1
        resp, err, ms = self._call("ReportRegistration", request)
        _seti("cpm_pf_elapsed_ms", ms)
        if resp is None:
            _sets("cpm_pf_error", err)
            _log_fail("ReportRegistration", err, ms)
            return 1
        _seti("cpm_pf_accepted", 1 if resp.accepted else 0)
        _seti("cpm_pf_deliveries", resp.deliveries)
        # only for log lines, but never let CR/LF through
        _sets("cpm_pf_notes", _CRLF.sub(" ", "; ".join(resp.notes)).strip())
        # DD-1 trust: the sidecar refuses the REGISTER (e.g. 403, untrusted source);
        # only a final error status is usable in t_reply
        if 300 <= resp.reject_status <= 699:
            _seti("cpm_pf_reject_status", resp.reject_status)
            reason = _CRLF.sub(" ", resp.reject_reason).strip()
            _sets("cpm_pf_reject_reason", reason or "Forbidden")
        _seti("cpm_pf_ok", 1)
        return 1


_journal_seq = [0]


def _journal_bye(directory, request, received_ms):
    """One fail-safe BYE as one file, durable before it is visible: written
    to <name>.tmp, fsync'd, renamed to <name>.bye, directory fsync'd. The
    name sorts in arrival order per process: <unix ms>-<pid>-<seq>.bye."""
    _journal_seq[0] += 1
    name = "%013d-%d-%d" % (received_ms, os.getpid(), _journal_seq[0])
    tmp = os.path.join(directory, name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
    try:
        os.write(fd, request.SerializeToString())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(directory, name + ".bye"))
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return name


def mod_init():
    return CpmPfBridge()
