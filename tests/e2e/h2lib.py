"""HTTP/2 clients and config helpers for cases_h2.py (issue 17).

Two clients over a real socket (plain h2c prior knowledge, or TLS with ALPN h2):

- H2Client: Python's `h2` package (python3-h2 4.1) as the client state
  machine; used for conformant traffic (bodies, concurrency, flow control,
  RFC 8441). The h2 package stops processing after a GOAWAY, so GOAWAY cases
  use RawH2.
- RawH2: frames written with struct.pack and read back one by one (HPACK
  through the `hpack` package h2 depends on); used for the attacks, the
  GOAWAY cases and anything the h2 package refuses to send. Every frame
  received is kept (DATA payloads per stream), so cases assert the exact
  frame the proxy answered with.

Both keep per-stream results in .streams[sid] (a Stream).
"""

import hashlib
import os
import socket
import ssl
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack

from harness import make_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
               "WINDOW_UPDATE", "CONTINUATION"]
F_END_STREAM = 0x1
F_ACK = 0x1
F_END_HEADERS = 0x4
F_PADDED = 0x8
F_PRIORITY = 0x20

S_HEADER_TABLE_SIZE = 1
S_ENABLE_PUSH = 2
S_MAX_CONCURRENT_STREAMS = 3
S_INITIAL_WINDOW_SIZE = 4
S_MAX_FRAME_SIZE = 5
S_MAX_HEADER_LIST_SIZE = 6
S_ENABLE_CONNECT_PROTOCOL = 8

ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
          "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR",
          "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 7, 8, 11

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"proxy-connection", b"te",
              b"trailer"}


def err_name(code):
    return ERRORS[code] if code is not None and 0 <= code < len(ERRORS) else repr(code)


def frame(ftype, flags, sid, payload=b""):
    """One HTTP/2 frame (RFC 9113 §4.1)."""
    return struct.pack("!I", len(payload))[1:] + struct.pack("!BBI", ftype, flags, sid & 0x7FFFFFFF) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, F_ACK if ack else 0, 0, b"".join(struct.pack("!HI", k, v) for k, v in pairs))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack("!I", inc))


def rst_stream(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack("!I", code))


def ping(data=b"\0" * 8, ack=False):
    return frame(PING, F_ACK if ack else 0, 0, data)


# ---------------------------------------------------------------------------
# config


def h2_config(upstreams, mode, certs=None, h2=None, routes=None, alpn=("h2", "http/1.1"), **kw):
    """Whole config text with {port}: mode "tls" (certs = (cert, key) absolute
    paths; ALPN list alpn) or "h2c" (prior knowledge on a plain listener).
    h2: dict rendered as the top-level `h2 = { ... };` group. Other keywords
    as for harness.make_config."""
    text = make_config(0, upstreams, routes=routes, **kw)
    plain = 'listen = ( { address = "127.0.0.1:0"; } );'
    assert plain in text
    if mode == "tls":
        alpn_txt = ", ".join('"%s"' % a for a in alpn)
        listen = ('listen = ( { address = "127.0.0.1:{port}"; tls = { certificates = ( { cert = "%s"; key = "%s"; } );'
                  ' alpn = [ %s ]; }; } );' % (certs[0], certs[1], alpn_txt))
    else:
        listen = 'listen = ( { address = "127.0.0.1:{port}"; h2c = true; } );'
    text = text.replace(plain, listen)
    if h2:
        parts = []
        for k, v in h2.items():
            parts.append("%s = %s;" % (k, v if isinstance(v, int) else '"%s"' % v))
        text += "h2 = { %s };\n" % " ".join(parts)
    return text


def open_socket(port, tls=None, timeout=10, rcvbuf=None, sni="h2.test"):
    """A connected socket to 127.0.0.1:port; tls: an SSLContext (ALPN h2 is
    asserted after the handshake)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        s = tls.wrap_socket(s, server_hostname=sni)
        got = s.selected_alpn_protocol()
        if got != "h2":
            s.close()
            raise AssertionError("ALPN selected %r, want 'h2'" % got)
    return s


def tls_context(ca, alpn=("h2",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = True
    ctx.set_alpn_protocols(list(alpn))
    return ctx


# ---------------------------------------------------------------------------
# per-stream results


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None  # list of (bytes, bytes) of the response head
        self.informational = []
        self.trailers = None
        self.data = bytearray()
        self.data_frames = 0
        self.ended = False  # END_STREAM received
        self.reset = None  # RST_STREAM error code received
        self.sha = hashlib.sha256()
        self.data_len = 0
        self.store = True

    def add_data(self, d):
        self.data_len += len(d)
        self.sha.update(d)
        if self.store:
            self.data += d

    @property
    def status(self):
        if self.headers is None:
            return None
        for k, v in self.headers:
            if k == b":status":
                return int(v)
        return None

    def get(self, name):
        name = name.encode() if isinstance(name, str) else name
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    def names(self):
        return [k for k, _ in self.headers or ()]

    @property
    def body(self):
        return bytes(self.data)

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def sha256(self):
        return self.sha.hexdigest()

    def __repr__(self):
        return "<Stream %d status=%s len=%d ended=%s reset=%s>" % (self.sid, self.status, self.data_len, self.ended,
                                                                   err_name(self.reset) if self.reset is not None
                                                                   else None)


def _deadline_left(deadline):
    return max(0.001, deadline - time.monotonic())


# ---------------------------------------------------------------------------
# the h2-package client


class H2Client:
    """A client on Python's h2 state machine over `sock`.

    settings: local SETTINGS sent in the preface ({code: value}).
    validate: False lets headers through that h2 would refuse to send.
    auto_window: acknowledge received DATA at once (False: call .consume())."""

    def __init__(self, sock, settings=None, validate=True, auto_window=True):
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=validate, normalize_outbound_headers=validate,
                                        validate_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=cfg)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=dict(settings))
        self.conn.initiate_connection()
        self.auto_window = auto_window
        self.streams = {}
        self.events = []
        self.remote_settings = {}  # as received in the server's SETTINGS frames
        self.settings_seen = False
        self.goaway = None
        self.eof = False
        self.pending_ack = {}  # sid -> bytes not yet acknowledged (auto_window False)
        self.flush()

    # -- io
    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, deadline, nbytes=65536):
        """Read once (until deadline); process the events. False on EOF or timeout."""
        if self.eof:
            return False
        self.sock.settimeout(_deadline_left(deadline))
        try:
            d = self.sock.recv(nbytes)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            d = b""
        if not d:
            self.eof = True
            return False
        self.feed(d)
        return True

    def feed(self, d):
        evs = self.conn.receive_data(d)
        for ev in evs:
            self.events.append(ev)
            self._event(ev)
        self.flush()

    def _stream(self, sid):
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = Stream(sid)
        return s

    def _event(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
            for k, cs in ev.changed_settings.items():
                self.remote_settings[int(k)] = cs.new_value
        elif isinstance(ev, h2.events.ResponseReceived):
            self._stream(ev.stream_id).headers = list(ev.headers)
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._stream(ev.stream_id).informational.append(list(ev.headers))
        elif isinstance(ev, h2.events.TrailersReceived):
            self._stream(ev.stream_id).trailers = list(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            s = self._stream(ev.stream_id)
            s.add_data(ev.data)
            s.data_frames += 1
            if self.auto_window:
                if ev.flow_controlled_length:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            else:
                self.pending_ack[ev.stream_id] = self.pending_ack.get(ev.stream_id, 0) + ev.flow_controlled_length
        elif isinstance(ev, h2.events.StreamEnded):
            self._stream(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self._stream(ev.stream_id).reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def consume(self, sid):
        """Acknowledge what was received on sid (WINDOW_UPDATEs as h2 decides)."""
        n = self.pending_ack.pop(sid, 0)
        if n:
            try:
                self.conn.acknowledge_received_data(n, sid)
            except h2.exceptions.StreamClosedError:
                pass
            self.flush()
        return n

    def until(self, pred, timeout=10, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            if self.eof:
                raise AssertionError("connection closed while waiting for %s (goaway %r, streams %r)"
                                     % (what, self.goaway, list(self.streams.values())[-5:]))
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %ss waiting for %s (streams %r)"
                                     % (timeout, what, list(self.streams.values())[-5:]))
            self.pump(deadline)
        return True

    def wait_settings(self, timeout=10):
        self.until(lambda: self.settings_seen, timeout, "the server's SETTINGS")
        return self.remote_settings

    # -- requests
    def request(self, method="GET", path="/", authority="h2.test", scheme="https", headers=(), body=None,
                content_length=True, end=True, extra_pseudo=(), raw_headers=None):
        """Open a stream; body bytes (content_length: send content-length);
        end: END_STREAM after the body (or on HEADERS without a body).
        Returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        if raw_headers is not None:
            hdrs = list(raw_headers)
        else:
            hdrs = [(b":method", method.encode()), (b":scheme", scheme.encode()),
                    (b":authority", authority.encode()), (b":path", path.encode())] + list(extra_pseudo)
            if body is not None and content_length:
                hdrs.append((b"content-length", str(len(body)).encode()))
            hdrs += [(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                     for k, v in headers]
        self._stream(sid)
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid, data, end=True, timeout=60):
        """Send data on sid within the flow-control windows (reading while blocked)."""
        deadline = time.monotonic() + timeout
        mv = memoryview(data)
        off = 0
        while off < len(mv):
            st = self.streams.get(sid)
            if st is not None and st.reset is not None:
                raise AssertionError("stream %d reset (%s) after %d of %d body bytes"
                                     % (sid, err_name(st.reset), off, len(mv)))
            win = self.conn.local_flow_control_window(sid)
            n = min(win, self.conn.max_outbound_frame_size, len(mv) - off)
            if n <= 0:
                if time.monotonic() >= deadline:
                    raise AssertionError("stream %d: no window after %d of %d body bytes" % (sid, off, len(mv)))
                if not self.pump(deadline) and self.eof:
                    raise AssertionError("EOF after %d of %d body bytes" % (off, len(mv)))
                continue
            self.conn.send_data(sid, bytes(mv[off:off + n]))
            off += n
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def end_stream(self, sid):
        """END_STREAM (an empty DATA frame); a stream the server already reset raises AssertionError."""
        try:
            self.conn.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            raise AssertionError("cannot end stream %d: already closed (%r)" % (sid, self.streams.get(sid)))
        self.flush()

    def reset_stream(self, sid, code=CANCEL):
        self.conn.reset_stream(sid, code)
        self.flush()

    def response(self, sid, timeout=30):
        self.until(lambda: self.streams[sid].done, timeout, "the end of stream %d" % sid)
        return self.streams[sid]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# the raw-frame client


class RecvFrame:
    def __init__(self, ftype, flags, sid, payload):
        self.type, self.flags, self.sid, self.payload = ftype, flags, sid, payload
        self.headers = None  # decoded header list (HEADERS with CONTINUATIONs joined)

    @property
    def error_code(self):
        if self.type == RST_STREAM:
            return struct.unpack("!I", self.payload[:4])[0]
        if self.type == GOAWAY:
            return struct.unpack("!I", self.payload[4:8])[0]
        return None

    @property
    def last_sid(self):
        return struct.unpack("!I", self.payload[:4])[0] & 0x7FFFFFFF if self.type == GOAWAY else None

    @property
    def debug(self):
        return self.payload[8:] if self.type == GOAWAY else None

    @property
    def settings(self):
        out = []
        for i in range(0, len(self.payload) - 5, 6):
            out.append(struct.unpack("!HI", self.payload[i:i + 6]))
        return out

    @property
    def increment(self):
        return struct.unpack("!I", self.payload[:4])[0] & 0x7FFFFFFF if self.type == WINDOW_UPDATE else None

    def __repr__(self):
        name = FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else str(self.type)
        extra = ""
        if self.type in (RST_STREAM,):
            extra = " %s" % err_name(self.error_code)
        elif self.type == GOAWAY:
            extra = " last=%d %s %r" % (self.last_sid, err_name(self.error_code), self.debug[:60])
        elif self.type == SETTINGS:
            extra = " %r" % self.settings
        elif self.type == WINDOW_UPDATE:
            extra = " +%d" % self.increment
        elif self.type == DATA:
            extra = " len=%d" % getattr(self, "data_len", len(self.payload))
        elif self.headers is not None:
            extra = " %r" % self.headers[:6]
        return "<%s flags=%#x sid=%d%s>" % (name, self.flags, self.sid, extra)

    def key(self):
        """(type name, sid, error name) for exact comparisons."""
        return (FRAME_NAMES[self.type], self.sid, err_name(self.error_code) if self.error_code is not None else None)


class RawH2:
    """Frames by hand. settings: SETTINGS sent after the preface (pairs);
    conn_window: extra connection window opened at once; auto: ACK SETTINGS
    and PINGs, open windows for received DATA (auto_window)."""

    def __init__(self, sock, settings=(), conn_window=0, preface=True, auto_ack=True, auto_window=True):
        self.sock = sock
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 30
        self.frames = []  # every frame received (DATA payloads dropped after accounting)
        self.streams = {}
        self.goaways = []
        self.server_settings = {}
        self.settings_frames = 0
        self.auto_ack = auto_ack
        self.auto_window = auto_window
        self.eof = False
        self.reset_by_peer = False
        self.next_sid = 1
        self.send_lock = threading.Lock()
        self.peer_initial_window = 65535
        self.conn_send_window = 65535
        self.send_windows = {}
        self.max_frame = 16384
        self._hdr_accum = None  # (sid, flags, bytes) while CONTINUATIONs arrive
        if preface:
            out = PREFACE + settings_frame(settings)
            if conn_window:
                out += window_update(0, conn_window)
            self.send(out)

    # -- io
    def send(self, data):
        with self.send_lock:
            self.sock.sendall(data)

    def send_frame(self, ftype, flags, sid, payload=b""):
        self.send(frame(ftype, flags, sid, payload))

    def header_block(self, headers):
        return self.enc.encode([(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                                for k, v in headers], huffman=False)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(_deadline_left(deadline))
            try:
                d = self.sock.recv(262144)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                self.reset_by_peer = True
                d = b""
            if not d:
                self.eof = True
                return False
            self.buf += d
        return True

    def recv_frame(self, timeout=10):
        """Next frame (bookkept), or None at EOF / timeout (see .eof)."""
        deadline = time.monotonic() + timeout
        if self.eof and len(self.buf) < 9:
            return None
        if not self._fill(9, deadline):
            return None
        n = int.from_bytes(self.buf[:3], "big")
        if not self._fill(9 + n, deadline):
            return None
        ftype, flags = self.buf[3], self.buf[4]
        sid = struct.unpack("!I", self.buf[5:9])[0] & 0x7FFFFFFF
        payload = bytes(self.buf[9:9 + n])
        del self.buf[:9 + n]
        f = RecvFrame(ftype, flags, sid, payload)
        self._book(f)
        return f

    def _stream(self, sid):
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = Stream(sid)
        return s

    def _book(self, f):
        if f.type == SETTINGS and not f.flags & F_ACK:
            self.settings_frames += 1
            for k, v in f.settings:
                self.server_settings[k] = v
                if k == S_INITIAL_WINDOW_SIZE:
                    delta = v - self.peer_initial_window
                    self.peer_initial_window = v
                    for s in self.send_windows:
                        self.send_windows[s] += delta
                elif k == S_MAX_FRAME_SIZE:
                    self.max_frame = v
            if self.auto_ack:
                self._try_send(settings_frame(ack=True))
        elif f.type == PING and not f.flags & F_ACK:
            if self.auto_ack:
                self._try_send(ping(f.payload, ack=True))
        elif f.type == WINDOW_UPDATE:
            if f.sid == 0:
                self.conn_send_window += f.increment
            else:
                self.send_windows[f.sid] = self.send_windows.get(f.sid, self.peer_initial_window) + f.increment
        elif f.type in (HEADERS, CONTINUATION):
            if f.type == HEADERS:
                p = f.payload
                pad = 0
                if f.flags & F_PADDED:
                    pad = p[0]
                    p = p[1:]
                if f.flags & F_PRIORITY:
                    p = p[5:]
                if pad:
                    p = p[:-pad]
                self._hdr_accum = [f.sid, f.flags, bytearray(p)]
            elif self._hdr_accum is not None:
                self._hdr_accum[2] += f.payload
            if f.flags & F_END_HEADERS and self._hdr_accum is not None:
                sid, flags, block = self._hdr_accum
                self._hdr_accum = None
                hdrs = list(self.dec.decode(bytes(block), raw=True))
                f.headers = hdrs
                s = self._stream(sid)
                status = [v for k, v in hdrs if k == b":status"]
                if s.headers is None and status and status[0].startswith(b"1") and status[0] != b"101":
                    s.informational.append(hdrs)
                elif s.headers is None:
                    s.headers = hdrs
                else:
                    s.trailers = hdrs
                if flags & F_END_STREAM:
                    s.ended = True
        elif f.type == DATA:
            s = self._stream(f.sid)
            p = f.payload
            if f.flags & F_PADDED:
                p = p[1:len(p) - p[0]]
            s.add_data(p)
            s.data_frames += 1
            if f.flags & F_END_STREAM:
                s.ended = True
            if self.auto_window and f.payload:
                out = window_update(0, len(f.payload))
                if not s.ended:
                    out += window_update(f.sid, len(f.payload))
                self._try_send(out)
            f = RecvFrame(f.type, f.flags, f.sid, b"")  # do not keep the payload twice
            f.data_len = len(p)
        elif f.type == RST_STREAM:
            self._stream(f.sid).reset = f.error_code
        elif f.type == GOAWAY:
            self.goaways.append(f)
        self.frames.append(f)

    def _try_send(self, data):
        try:
            self.send(data)
        except OSError:
            pass

    def until(self, pred, timeout=10, what="condition", eof_ok=False):
        """Read frames until pred() (checked before each read). At EOF: the
        result of pred() if eof_ok, else AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if self.eof:
                if eof_ok:
                    return pred()
                raise AssertionError("connection closed while waiting for %s; last frames %r"
                                     % (what, self.frames[-8:]))
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %ss waiting for %s; last frames %r"
                                     % (timeout, what, self.frames[-8:]))
            self.recv_frame(_deadline_left(deadline))

    def wait_settings(self, timeout=10):
        self.until(lambda: self.settings_frames > 0, timeout, "the server's SETTINGS")
        return self.server_settings

    def read_to_eof(self, timeout=10):
        """Read until the server closes; returns the frames read meanwhile."""
        start = len(self.frames)
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() >= deadline:
                raise AssertionError("server did not close within %ss; last frames %r" % (timeout, self.frames[-8:]))
            self.recv_frame(_deadline_left(deadline))
        return self.frames[start:]

    # -- requests
    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def request_headers(self, method="GET", path="/", authority="h2.test", scheme="https", headers=(),
                        extra_pseudo=()):
        return ([(":method", method), (":scheme", scheme), (":authority", authority), (":path", path)]
                + list(extra_pseudo) + list(headers))

    def send_headers(self, sid, headers, end_stream=True):
        self._stream(sid)
        self.send_windows.setdefault(sid, self.peer_initial_window)
        block = self.header_block(headers)
        flags = F_END_HEADERS | (F_END_STREAM if end_stream else 0)
        if len(block) <= self.max_frame:
            self.send_frame(HEADERS, flags, sid, block)
            return
        out = frame(HEADERS, flags & ~F_END_HEADERS, sid, block[:self.max_frame])
        rest = block[self.max_frame:]
        while rest:
            part, rest = rest[:self.max_frame], rest[self.max_frame:]
            out += frame(CONTINUATION, F_END_HEADERS if not rest else 0, sid, part)
        self.send(out)

    def request(self, method="GET", path="/", body=None, end=True, headers=(), **kw):
        sid = self.new_sid()
        hdrs = self.request_headers(method, path, headers=headers, **kw)
        self.send_headers(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            self.send_data(sid, body, end=end)
        return sid

    def send_data(self, sid, data, end=True, timeout=60):
        deadline = time.monotonic() + timeout
        off = 0
        while off < len(data):
            win = min(self.conn_send_window, self.send_windows.get(sid, self.peer_initial_window), self.max_frame)
            n = min(win, len(data) - off)
            if n <= 0:
                if self.eof or time.monotonic() >= deadline:
                    raise AssertionError("stream %d: no window after %d of %d bytes" % (sid, off, len(data)))
                self.recv_frame(_deadline_left(deadline))
                continue
            last = off + n == len(data)
            self.send_frame(DATA, F_END_STREAM if (end and last) else 0, sid, data[off:off + n])
            self.conn_send_window -= n
            self.send_windows[sid] = self.send_windows.get(sid, self.peer_initial_window) - n
            off += n
        if end and not data:
            self.send_frame(DATA, F_END_STREAM, sid, b"")

    def response(self, sid, timeout=30):
        self.until(lambda: self.streams[sid].done, timeout, "the end of stream %d" % sid)
        return self.streams[sid]

    def frames_of(self, ftype, sid=None):
        return [f for f in self.frames if f.type == ftype and (sid is None or f.sid == sid)]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# WebSocket frames over a stream (RFC 8441: the client masks as usual)


def ws_frame(op, payload, fin=True, mask=True):
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    if not payload:
        return head + key
    k = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_parse(buf, limit=None):
    """Complete frames at the start of buf (at most limit): ([(fin, op, masked, payload)], bytes used)."""
    out = []
    i = 0
    while limit is None or len(out) < limit:
        if len(buf) - i < 2:
            break
        b0, b1 = buf[i], buf[i + 1]
        n = b1 & 127
        j = i + 2
        if n == 126:
            if len(buf) - j < 2:
                break
            n = struct.unpack("!H", bytes(buf[j:j + 2]))[0]
            j += 2
        elif n == 127:
            if len(buf) - j < 8:
                break
            n = struct.unpack("!Q", bytes(buf[j:j + 8]))[0]
            j += 8
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            if len(buf) - j < 4:
                break
            key = bytes(buf[j:j + 4])
            j += 4
        if len(buf) - j < n:
            break
        payload = bytes(buf[j:j + n])
        if masked and n:
            k = (key * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
        out.append((b0 >> 7, b0 & 15, masked, payload))
        i = j + n
    return out, i
