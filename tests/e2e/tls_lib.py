"""Helpers for the TLS cases (cases_tls.py).

Standard library only (plus the `openssl` command). A throwaway CA and
leaf certificates are generated at test time in the case directory (EC P-256,
valid two days); nothing here is committed. Also: config text with a TLS
listener / TLS upstreams, TLS clients for the harness (a harness Client over
an ssl socket, and a memory-BIO connection that can send close_notify without
closing TCP), a TLS backend, and a real ClientHello for truncation tests.
"""

import os
import re
import socket
import ssl
import subprocess
import time

from harness import Client, _Reader, make_config, wait_until


# ---------------------------------------------------------------------------
# certificates


def _run(argv, cwd):
    p = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                    p.stderr.decode(errors="replace")[-500:]))
    return p


class PKI:
    """A CA in directory d (files <prefix>ca.pem / <prefix>ca.key) that signs leaves.

    leaf(stem, cn, sans) -> (cert_name, key_name): file names relative to d
    (absolute paths via .path(name)). sans: list like ["DNS:a.test",
    "IP:127.0.0.1"]; None or [] makes a certificate without subjectAltName."""

    def __init__(self, d, prefix="", cn="switchyard test CA"):
        self.dir = d
        self.ca = prefix + "ca.pem"
        self.ca_key = prefix + "ca.key"
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=" + cn,
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
             d)

    def path(self, name):
        return os.path.join(self.dir, name)

    def leaf(self, stem, cn, sans=None):
        key, csr, pem, ext = stem + ".key", stem + ".csr", stem + ".pem", stem + ".ext"
        _run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=" + cn], self.dir)
        lines = ["basicConstraints=CA:FALSE", "extendedKeyUsage=serverAuth"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        with open(self.path(ext), "w") as f:
            f.write("\n".join(lines) + "\n")
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
              "-days", "2", "-out", pem, "-extfile", ext], self.dir)
        return pem, key


def standard_pki(t):
    """The certificates most cases use, in the case directory:
    default.test (first = default), *.b.test, and a.test + exact.b.test
    (an exact name that also matches the wildcard certificate listed before
    it). Returns (pki, [(cert, key), ...]) in listener order."""
    pki = PKI(t.dir)
    certs = [pki.leaf("default", "default.test", ["DNS:default.test"]),
             pki.leaf("wild", "*.b.test", ["DNS:*.b.test"]),
             pki.leaf("a", "a.test", ["DNS:a.test", "DNS:exact.b.test"])]
    return pki, certs


SUBJECT = {"default": "default.test", "wild": "*.b.test", "a": "a.test"}


# ---------------------------------------------------------------------------
# config


def listen_tls(certs, protocols="TLSv1.2+", port="{port}"):
    """A `listen` line with a TLS listener; certs: [(cert, key), ...]."""
    ents = ", ".join('{ cert = "%s"; key = "%s"; }' % ck for ck in certs)
    prot = ' protocols = "%s";' % protocols if protocols else ""
    return ('listen = ( { address = "127.0.0.1:%s"; tls = { certificates = ( %s );%s }; } );'
            % (port, ents, prot))


def tls_config(upstreams, certs=None, protocols="TLSv1.2+", upstream_tls=None, **kw):
    """Whole config text with {port}: a TLS listener if certs (else plain), and
    upstream_tls = {upstream name: 'verify = true; ca = "ca.pem"; ...'} adding
    a tls group to those upstreams. Other keywords as for make_config."""
    text = make_config(0, upstreams, **kw)
    plain = 'listen = ( { address = "127.0.0.1:0"; } );'
    assert plain in text
    text = text.replace(plain, listen_tls(certs, protocols) if certs else plain.replace(":0", ":{port}"))
    for name, body in (upstream_tls or {}).items():
        rx = re.compile(r'^(  \{ name = "%s"; servers = \(.*\);) \}$' % re.escape(name), re.M)
        text, n = rx.subn(lambda m: "%s tls = { %s }; }" % (m.group(1), body), text)
        assert n == 1, "upstream %s not found in %r" % (name, text)
    return text


# ---------------------------------------------------------------------------
# clients


def client_ctx(ca=None, alpn=None, minv=None, maxv=None, verify_name=True):
    """An SSLContext for a client; ca: absolute path (verification on) or None."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.check_hostname = verify_name
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    return ctx


class TLSClient(Client):
    """A harness Client whose socket is TLS (handshake done in the constructor).
    sni=None sends no server name."""

    def __init__(self, port, ctx, sni=None, timeout=10):
        super().__init__(port, timeout=timeout)
        self.raw = self.sock
        self.sock = ctx.wrap_socket(self.raw, server_hostname=sni)
        self.rd = _Reader(self.sock)

    @property
    def version(self):
        return self.sock.version()

    def peer_cn(self):
        der = self.sock.getpeercert(binary_form=True)
        return cert_cn(der)


def cert_cn(der):
    """CN of a DER certificate (via the openssl command)."""
    p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "RFC2253"],
                       input=der, capture_output=True, timeout=10)
    m = re.search(r"CN=([^,\n]+)", p.stdout.decode())
    return m.group(1) if m else None


def tls_connect(t, port, sni=None, ca=None, **kw):
    c = TLSClient(port, client_ctx(ca=ca, **kw), sni=sni)
    t.clients.append(c)
    return c


class MemTLS:
    """TLS over a connected socket through memory BIOs, so that close_notify
    and TCP FIN are separate: close_notify() sends only the alert, the TCP
    connection stays open. Client or server side."""

    def __init__(self, sock, ctx, server_side=False, sni=None):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=server_side, server_hostname=sni)
        self.got_close_notify = False  # peer sent close_notify
        self.tcp_eof = False           # peer's TCP FIN (or reset)
        self.ragged = False            # TCP EOF without close_notify

    def _flush(self):
        d = self.out.read()
        if d:
            self.sock.settimeout(30)
            self.sock.sendall(d)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("TLS read timed out")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if d:
            self.inc.write(d)
        else:
            self.tcp_eof = True
            self.inc.write_eof()

    def handshake(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if self.tcp_eof:
                    raise AssertionError("TCP EOF during the TLS handshake")
                self._fill(deadline)

    def send(self, data):
        mv = memoryview(data)
        while mv:
            n = self.obj.write(mv[:65536])
            mv = mv[n:]
            self._flush()

    def recv(self, timeout=10):
        """Some plaintext; b'' at close_notify or TCP EOF (see the flags)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                d = self.obj.read(65536)
                if d:
                    return d
                self.got_close_notify = True
                return b""
            except ssl.SSLZeroReturnError:
                self.got_close_notify = True
                return b""
            except ssl.SSLEOFError:
                self.ragged = True
                return b""
            except ssl.SSLWantReadError:
                self._flush()
                if self.tcp_eof:
                    self.ragged = True
                    return b""
                self._fill(deadline)

    def recv_exact(self, n, timeout=15):
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n:
            d = self.recv(max(0.01, deadline - time.monotonic()))
            if not d:
                raise AssertionError("EOF after %d of %d bytes (close_notify %s)"
                                     % (len(out), n, self.got_close_notify))
            out += d
        return bytes(out)

    def recv_until(self, sep, timeout=10):
        out = bytearray()
        deadline = time.monotonic() + timeout
        while sep not in out:
            d = self.recv(max(0.01, deadline - time.monotonic()))
            if not d:
                raise AssertionError("EOF before %r, got %r" % (sep, bytes(out[:300])))
            out += d
        return bytes(out)

    def recv_to_eof(self, timeout=10):
        out = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            d = self.recv(max(0.01, deadline - time.monotonic()))
            if not d:
                return bytes(out)
            out += d

    def close_notify(self):
        """Send close_notify (our half-close); TCP stays open."""
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        self._flush()


def mem_connect(port, ctx, sni=None, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    m = MemTLS(s, ctx, sni=sni)
    m.handshake(timeout)
    return m


def client_hello(sni="a.test"):
    """The bytes of a real TLS ClientHello (Python's default client)."""
    ctx = client_ctx()
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


# ---------------------------------------------------------------------------
# servers


def server_ctx(pki, cert, key, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.path(cert), pki.path(key))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSBackend:
    """A RawBackend speaking TLS. handler(conn: MemTLS, rec) runs after the
    handshake. .snis: SNI names the clients sent (None for none);
    .handshakes: completed handshakes; .failures: handshake errors (text)."""

    def __init__(self, t, pki, cert, key, handler):
        self.ctx = server_ctx(pki, cert, key)
        self.snis, self.handshakes, self.failures, self.conns = [], 0, [], []
        self.ctx.sni_callback = lambda sobj, name, c: self.snis.append(name)
        self.handler = handler
        self.raw = t.raw_backend(self._handle)
        self.port, self.address = self.raw.port, self.raw.address

    def _handle(self, rec):
        m = MemTLS(rec.sock, self.ctx, server_side=True)
        try:
            m.handshake()
        except (ssl.SSLError, AssertionError, OSError) as e:
            self.failures.append("%s: %s" % (type(e).__name__, e))
            return
        self.handshakes += 1
        self.conns.append(m)
        self.handler(m, rec)

    @property
    def connections(self):
        return self.raw.connections

    @property
    def errors(self):
        return self.raw.errors

    def expect_errors(self, reason="expected by the case"):
        """Errors in the handler threads are part of the case (see harness.BackendErrors)."""
        self.raw.expect_errors(reason)
        return self


def http_ok(body=b"tls backend ok"):
    """TLSBackend handler: read one request head, answer 200 with body, close."""

    def handler(m, rec):
        head = m.recv_until(b"\r\n\r\n")
        rec.data += head
        m.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        try:
            m.close_notify()
            rec.sock.shutdown(socket.SHUT_WR)
            m.recv_to_eof(5)
        except OSError:
            pass  # the response is complete: the proxy may close (or reset) first

    return handler


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def wait_closed_sock(s, timeout):
    """Read a plain socket until EOF/reset; returns (bytes, seconds taken)."""
    t0 = time.monotonic()
    out = bytearray()
    while True:
        left = t0 + timeout - time.monotonic()
        if left <= 0:
            raise AssertionError("connection not closed within %.1fs (got %r)" % (timeout, bytes(out[:200])))
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            d = b""
        except socket.timeout:
            continue
        if not d:
            return bytes(out), time.monotonic() - t0
        out += d


__all__ = ["PKI", "standard_pki", "SUBJECT", "listen_tls", "tls_config", "client_ctx", "TLSClient", "cert_cn",
           "tls_connect", "MemTLS", "mem_connect", "client_hello", "server_ctx", "TLSBackend", "http_ok",
           "fd_count", "wait_closed_sock", "wait_until"]
