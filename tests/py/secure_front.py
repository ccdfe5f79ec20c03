#!/usr/bin/env python3
"""A TLS + SASL terminating front end for a Tansu broker (issue 9 tests).

Tansu 0.6 serves no TLS and, with memory storage, stores no SASL credentials,
so the security tests put this proxy between the client and Tansu:

    client --TCP [--TLS] [--SASL]--> secure_front.py --TCP--> its own Tansu

Advertised addresses: the front end starts a **dedicated Tansu** (memory
storage) whose `--advertised-listener-url` is the front end's own address, so
Metadata and FindCoordinator replies already name the front end and every
connection a client makes (bootstrap, partition leaders, coordinators) comes
back through it. No reply is rewritten except ApiVersions (see below). This is
simpler and more robust than rewriting Metadata/FindCoordinator at every
version.

What it does on each client connection:

* optional TLS (server certificate from a CA made at start-up, SANs
  127.0.0.1 and localhost); with --client-auth a client certificate signed by
  that CA is required (mutual TLS);
* optional SASL, answered here and never forwarded: SaslHandshake (17, v0-1;
  v0 switches to unframed tokens as Kafka does) and SaslAuthenticate (36,
  v0-2; v2 is flexible) for PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (server side
  by the `scramp` package) and OAUTHBEARER (RFC 7628; unsecured `alg: none`
  JWS with `sub` and a future `exp`, like Kafka's default validator; an
  invalid token gets Kafka's JSON challenge with error 0, then error 58 once
  the client answers `\\x01`). User `alice`, password `alice-secret`. A failed
  login gets error 58 (SASL_AUTHENTICATION_FAILED) and a message, then the
  connection is closed. Before authentication only ApiVersions, SaslHandshake
  and SaslAuthenticate are allowed; anything else closes the connection.
* ApiVersions replies (with SASL on) get keys 17 (0-1) and 36 (0-2) added if
  Tansu lists them with another range or not at all (the reply is parsed and
  re-encoded; v3+ is flexible);
* --session-lifetime-ms N (KIP-368): SaslAuthenticate v1+ replies carry N
  (for OAUTHBEARER: at most the token's remaining life), and a connection
  that has not re-authenticated (a new SaslHandshake + SaslAuthenticate on the
  same connection) within N ms is closed at its next request, as Kafka does
  (kafka.network.Processor: a SaslHandshake after expiry still starts a
  re-authentication; any other request closes the connection). Not on a
  timer: librdkafka starts re-authenticating at 90% of the lifetime but holds
  its SaslHandshake until in-flight requests (a Fetch waiting up to
  fetch.wait.max.ms) are answered, so a strict timer would cut it off where
  Kafka would not;
* failure knobs: --bad-server-signature (SCRAM server-final `v=` carries a
  wrong signature, error code 0) and --server-final-error (server-final
  `e=invalid-proof`, error code 0). In both cases the front end goes on
  serving the connection, so a client that ignored the bad final message
  would visibly succeed;
* every other request goes to Tansu byte for byte; replies, local or Tansu's,
  go back in request order, so pipelining works.

Counters (JSON object, rewritten atomically *before* the reply that completes
the event is sent, so a client that saw its reply can read them at once):
    connections       TCP connections accepted
    tls_failures      TLS handshakes that failed
    authentications   successful SASL exchanges, re-authentications included
    reauthentications successful exchanges on an already-authenticated connection
    refused           failed SASL exchanges (error 58, invalid OAUTHBEARER
                      token, --server-final-error)
    expired           connections closed for a request after their session
                      lifetime without re-authentication

Start-up: writes the PEM files into --dir, starts Tansu, then prints one JSON
line on stdout: {"port": F, "tansu": "127.0.0.1:T", "stats": path,
"certs": {...}}. It stops (and stops its Tansu) when its stdin closes; Tansu
also gets SIGTERM if this process dies (PR_SET_PDEATHSIG).

Certificates written to --dir: ca.pem, server.pem (leaf then CA),
server.key, client.pem, client.key (PKCS#8), client-rsa.key (PKCS#1,
"BEGIN RSA PRIVATE KEY"), other-ca.pem (an unrelated CA), other-client.pem /
other-client.key (a client certificate signed by that other CA).
"""

import argparse
import asyncio
import base64
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

USER = "alice"
PASSWORD = "alice-secret"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

API_SASL_HANDSHAKE = 17
API_API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36
SASL_RANGES = {API_SASL_HANDSHAKE: (0, 1), API_SASL_AUTHENTICATE: (0, 2)}

ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_ILLEGAL_SASL_STATE = 34
ERR_SASL_AUTHENTICATION_FAILED = 58

MAX_FRAME = 100 * 1024 * 1024


def log(msg):
    sys.stderr.write("secure_front %.3f: %s\n" % (time.time(), msg))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Certificates


def make_certs(d):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kafka-retry tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                              crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key, ca_cert, cn, key, eku, sans):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(ca_key, hashes.SHA256())

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key, fmt):
        return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())

    def write(fname, data):
        p = os.path.join(d, fname)
        with open(p, "wb") as f:
            f.write(data)
        return p

    os.makedirs(d, exist_ok=True)
    ca_key, ca_cert = ca("kafka-retry test CA")
    other_key, other_cert = ca("kafka-retry unrelated CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_cert = leaf(ca_key, ca_cert, "localhost", server_key, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client_cert = leaf(ca_key, ca_cert, USER, client_key, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    oc_key = ec.generate_private_key(ec.SECP256R1())
    oc_cert = leaf(other_key, other_cert, USER, oc_key, ExtendedKeyUsageOID.CLIENT_AUTH, None)

    pkcs8 = serialization.PrivateFormat.PKCS8
    pkcs1 = serialization.PrivateFormat.TraditionalOpenSSL
    return {
        "dir": d,
        "ca": write("ca.pem", pem(ca_cert)),
        "server_cert": write("server.pem", pem(server_cert) + pem(ca_cert)),
        "server_key": write("server.key", key_pem(server_key, pkcs8)),
        "client_cert": write("client.pem", pem(client_cert)),
        "client_key": write("client.key", key_pem(client_key, pkcs8)),
        "client_key_rsa": write("client-rsa.key", key_pem(client_key, pkcs1)),
        "other_ca": write("other-ca.pem", pem(other_cert)),
        "other_client_cert": write("other-client.pem", pem(oc_cert)),
        "other_client_key": write("other-client.key", key_pem(oc_key, pkcs8)),
    }


# --------------------------------------------------------------------------
# Wire helpers


class Buf:
    def __init__(self, data, pos=0):
        self.d = data
        self.p = pos

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("short frame")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode("utf-8")

    def bytes32(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def compact_bytes(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1)

    def tagged(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def rest(self):
        return self.d[self.p:]


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode("utf-8")
    return struct.pack(">h", len(b)) + b


def enc_compact_string(s):
    if s is None:
        return b"\x00"
    b = s.encode("utf-8")
    return uvarint(len(b) + 1) + b


def frame(body):
    return struct.pack(">i", len(body)) + body


def parse_request_header(body):
    """(api_key, api_version, correlation_id, Buf at the start of the body)."""
    b = Buf(body)
    key, version, corr = b.i16(), b.i16(), b.i32()
    b.string()  # client_id
    flexible = (key == API_SASL_AUTHENTICATE and version >= 2) or (key == API_API_VERSIONS and version >= 3)
    if flexible:
        b.tagged()
    return key, version, corr, b


def patch_api_versions(body, version):
    """Tansu's ApiVersions reply with keys 17 and 36 listed at our ranges."""
    b = Buf(body)
    corr = b.i32()
    err = b.i16()
    if err != 0:
        return body
    entries = []
    if version >= 3:
        for _ in range(b.uvarint() - 1):
            k, lo, hi = b.i16(), b.i16(), b.i16()
            start = b.p
            b.tagged()
            entries.append((k, lo, hi, b.d[start:b.p]))
    else:
        for _ in range(b.i32()):
            entries.append((b.i16(), b.i16(), b.i16(), b""))
    rest = b.rest()
    have = {e[0]: e for e in entries}
    if all(k in have and have[k][1:3] == r for k, r in SASL_RANGES.items()):
        return body
    for k, (lo, hi) in SASL_RANGES.items():
        have[k] = (k, lo, hi, b"\x00" if version >= 3 else b"")
    entries = [have[k] for k in sorted(have)]
    out = bytearray(struct.pack(">ih", corr, err))
    out += uvarint(len(entries) + 1) if version >= 3 else struct.pack(">i", len(entries))
    for k, lo, hi, tags in entries:
        out += struct.pack(">hhh", k, lo, hi) + tags
    out += rest
    return bytes(out)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --------------------------------------------------------------------------
# The front end


class Stats:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.c = dict(connections=0, tls_failures=0, authentications=0, reauthentications=0, refused=0,
                      expired=0)
        self.write()

    def bump(self, *names):
        with self.lock:
            for n in names:
                self.c[n] += 1
            self.write()

    def write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.c, f)
        os.replace(tmp, self.path)


class AuthFailed(Exception):
    pass


class Front:
    def __init__(self, args, stats, ssl_ctx):
        self.args = args
        self.stats = stats
        self.ssl_ctx = ssl_ctx
        self.upstream = None  # (host, port) of Tansu
        self.scram = {}
        if args.sasl:
            import scramp

            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                m = scramp.ScramMechanism(mech)
                self.scram[mech] = (m, m.make_auth_info(PASSWORD, iteration_count=4096))

    async def handle(self, reader, writer):
        self.stats.bump("connections")
        if self.ssl_ctx is not None:
            try:
                await writer.start_tls(self.ssl_ctx, ssl_handshake_timeout=10)
            except Exception as e:  # noqa: BLE001
                log("TLS handshake failed: %s" % e)
                self.stats.bump("tls_failures")
                writer.transport.abort()
                return
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError as e:
            log("cannot reach Tansu at %s:%d: %s" % (self.upstream + (e,)))
            writer.transport.abort()
            return
        await Conn(self, reader, writer, up_r, up_w).run()


class Conn:
    next_id = 0

    def __init__(self, front, reader, writer, up_r, up_w):
        self.f = front
        self.args = front.args
        self.r, self.w, self.up_r, self.up_w = reader, writer, up_r, up_w
        self.queue = asyncio.Queue()
        self.closed = False
        self.authed = not self.args.sasl
        self.exchange = None  # dict while a SASL exchange is under way
        self.unframed = False  # after SaslHandshake v0
        self.deadline = None  # time.monotonic() when the session lifetime ends
        Conn.next_id += 1
        self.id = Conn.next_id

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in (self.w, self.up_w):
            try:
                w.transport.abort()
            except Exception:  # noqa: BLE001
                pass
        self.queue.put_nowait(None)

    async def run(self):
        writer_task = asyncio.ensure_future(self.write_loop())
        try:
            await self.read_loop()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
            pass
        except Exception as e:  # noqa: BLE001
            log("connection error: %r" % e)
        finally:
            # Let queued replies go out before closing (unless closed already).
            self.queue.put_nowait(None)
            try:
                await writer_task
            finally:
                self.close()

    async def read_frame(self, reader):
        n = struct.unpack(">i", await reader.readexactly(4))[0]
        if n < 0 or n > MAX_FRAME:
            raise ValueError("bad frame length %d" % n)
        return await reader.readexactly(n)

    async def read_loop(self):
        while not self.closed:
            body = await self.read_frame(self.r)
            if self.unframed:
                self.unframed_token(body)
                continue
            key, version, corr, b = parse_request_header(body)
            if self.args.sasl and key == API_SASL_HANDSHAKE:
                self.handshake(version, corr, b)
            elif self.args.sasl and key == API_SASL_AUTHENTICATE:
                self.authenticate(version, corr, b)
            elif key == API_API_VERSIONS or self.authed:
                if self.deadline is not None and self.exchange is None and time.monotonic() >= self.deadline:
                    # As Kafka does: the first request after the session
                    # lifetime that does not start a re-authentication closes.
                    log("conn %d: api %d v%d after the session lifetime without re-authentication: closing"
                        % (self.id, key, version))
                    self.f.stats.bump("expired")
                    self.close()
                    return
                self.up_w.write(frame(body))
                self.queue.put_nowait(("up", key, version))
            else:
                log("api %d v%d before authentication: closing" % (key, version))
                self.close()
                return

    async def write_loop(self):
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if item[0] == "up":
                _, key, version = item
                try:
                    body = await self.read_frame(self.up_r)
                except (asyncio.IncompleteReadError, ConnectionError, OSError):
                    self.close()
                    return
                if key == API_API_VERSIONS and self.args.sasl:
                    body = patch_api_versions(body, version)
                data, close_after = frame(body), False
            else:
                _, data, close_after = item
            try:
                self.w.write(data)
                await self.w.drain()
            except (ConnectionError, OSError):
                self.close()
                return
            if close_after:
                self.close()
                return

    def reply(self, data, close_after=False):
        self.queue.put_nowait(("local", frame(data), close_after))

    # --- SASL ---------------------------------------------------------------

    def handshake(self, version, corr, b):
        mech = b.string()
        body = struct.pack(">i", corr)
        if mech not in MECHANISMS:
            err = ERR_UNSUPPORTED_SASL_MECHANISM
        elif self.exchange is not None:
            err = ERR_ILLEGAL_SASL_STATE
        else:
            err = 0
        body += struct.pack(">hi", err, len(MECHANISMS)) + b"".join(enc_string(m) for m in MECHANISMS)
        if err:
            self.reply(body, close_after=err == ERR_ILLEGAL_SASL_STATE)
            return
        self.exchange = {"mech": mech, "step": 0, "reauth": self.authed}
        if self.args.verbose:
            log("conn %d: SaslHandshake v%d %s%s" % (self.id, version, mech, " (re-auth)" if self.authed else ""))
        self.unframed = version == 0
        self.reply(body)

    def authenticate(self, version, corr, b):
        token = b.compact_bytes() if version >= 2 else b.bytes32()
        if self.exchange is None:
            self.auth_reply(version, corr, ERR_ILLEGAL_SASL_STATE, "SaslAuthenticate before SaslHandshake", b"",
                            close_after=True)
            return
        try:
            out, done, lifetime_ms = self.step(token or b"")
        except AuthFailed as e:
            self.f.stats.bump("refused")
            self.exchange = None
            self.auth_reply(version, corr, ERR_SASL_AUTHENTICATION_FAILED, str(e), b"", close_after=True)
            return
        if done:
            self.finish()
        self.auth_reply(version, corr, 0, None, out, lifetime_ms=lifetime_ms if done else 0)

    def unframed_token(self, token):
        try:
            out, done, _ = self.step(token)
        except AuthFailed as e:
            log("unframed SASL failed: %s" % e)
            self.f.stats.bump("refused")
            self.close()
            return
        if done:
            self.unframed = False
            self.finish()
        self.queue.put_nowait(("local", frame(out), False))

    def auth_reply(self, version, corr, err, msg, auth_bytes, lifetime_ms=0, close_after=False):
        if version >= 2:
            body = struct.pack(">i", corr) + b"\x00"  # response header v1: no tagged fields
            body += struct.pack(">h", err) + enc_compact_string(msg) + uvarint(len(auth_bytes) + 1) + auth_bytes
            body += struct.pack(">q", lifetime_ms) + b"\x00"
        else:
            body = struct.pack(">ih", corr, err) + enc_string(msg) + struct.pack(">i", len(auth_bytes)) + auth_bytes
            if version >= 1:
                body += struct.pack(">q", lifetime_ms)
        self.reply(body, close_after)

    def finish(self):
        """A successful exchange: counters, session lifetime."""
        reauth = self.exchange["reauth"]
        lifetime_ms = self.exchange.get("lifetime_ms", 0)
        self.exchange = None
        self.authed = True
        self.f.stats.bump("authentications", *(["reauthentications"] if reauth else []))
        if self.args.verbose:
            log("conn %d: authenticated%s, session lifetime %d ms" % (self.id, " again" if reauth else "",
                                                                     lifetime_ms))
        self.deadline = time.monotonic() + lifetime_ms / 1000.0 if lifetime_ms > 0 else None

    def session_lifetime_ms(self):
        return self.args.session_lifetime_ms or 0

    def step(self, token):
        """(reply bytes, exchange done, session lifetime ms); AuthFailed on failure."""
        ex = self.exchange
        mech = ex["mech"]
        if mech == "PLAIN":
            parts = token.split(b"\x00")
            if len(parts) != 3:
                raise AuthFailed("Authentication failed: invalid SASL/PLAIN request: expected 3 tokens")
            authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
            if authzid and authzid != user:
                raise AuthFailed("Authentication failed: Client requested an authorization id that is different "
                                 "from username")
            if user != USER or password != PASSWORD:
                raise AuthFailed("Authentication failed: Invalid username or password")
            ex["lifetime_ms"] = self.session_lifetime_ms()
            return b"", True, ex["lifetime_ms"]
        if mech.startswith("SCRAM-"):
            return self.scram_step(ex, token)
        if mech == "OAUTHBEARER":
            return self.oauth_step(ex, token)
        raise AuthFailed("unsupported mechanism %s" % mech)

    def scram_step(self, ex, token):
        import scramp

        m, auth_info = self.f.scram[ex["mech"]]
        fail = "Authentication failed during authentication due to invalid credentials with SASL mechanism %s" % (
            ex["mech"])
        try:
            msg = token.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthFailed(fail)
        if ex["step"] == 0:

            def auth_fn(user):
                if user != USER:
                    raise scramp.ScramException("unknown user")
                return auth_info

            server = m.make_server(auth_fn)
            try:
                server.set_client_first(msg)
                first = server.get_server_first()
            except Exception as e:  # noqa: BLE001
                log("SCRAM client-first refused: %s" % e)
                raise AuthFailed(fail)
            ex["server"], ex["step"] = server, 1
            return first.encode("utf-8"), False, 0
        server = ex["server"]
        try:
            server.set_client_final(msg)
            final = server.get_server_final()
        except Exception as e:  # noqa: BLE001
            log("SCRAM client-final refused: %s" % e)
            raise AuthFailed(fail)
        if self.args.server_final_error:
            self.f.stats.bump("refused")
            final = "e=invalid-proof"
            # The front end goes on serving; not an authentication it counts.
            ex["lifetime_ms"] = self.session_lifetime_ms()
            self.exchange = None
            self.authed = True
            return final.encode(), False, 0
        if self.args.bad_server_signature:
            sig = bytearray(base64.b64decode(final[2:]))
            sig[0] ^= 0xFF
            final = "v=" + base64.b64encode(bytes(sig)).decode()
        ex["lifetime_ms"] = self.session_lifetime_ms()
        return final.encode("utf-8"), True, ex["lifetime_ms"]

    def oauth_step(self, ex, token):
        if ex["step"] == 1:
            # The client's answer to our error challenge (should be "\x01").
            raise AuthFailed("Authentication failed: %s" % ex["error"])
        err = None
        exp = None
        try:
            text = token.decode("utf-8")
            gs2, sep, rest = text.partition("\x01")
            if not sep or not gs2.startswith("n,") or not rest.endswith("\x01\x01"):
                raise ValueError("malformed OAUTHBEARER initial response")
            kvs = dict(kv.split("=", 1) for kv in rest[:-2].split("\x01") if kv)
            auth = kvs.get("auth", "")
            if not auth.startswith("Bearer "):
                raise ValueError("no auth=Bearer")
            jwt = auth[len("Bearer "):].strip()
            parts = jwt.split(".")
            if len(parts) != 3:
                raise ValueError("token is not a compact JWS (header.payload.signature)")
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            if header.get("alg") != "none":
                raise ValueError("unsecured token expected (alg none), got alg %r" % header.get("alg"))
            if parts[2]:
                raise ValueError("an unsecured token has no signature")
            sub = claims.get("sub")
            if not isinstance(sub, str) or not sub:
                raise ValueError("no 'sub' claim")
            exp = claims.get("exp")
            if not isinstance(exp, (int, float)):
                raise ValueError("no 'exp' claim")
            now = time.time()
            if exp <= now:
                raise ValueError("token expired: exp %s <= now %.3f" % (exp, now))
        except (ValueError, UnicodeDecodeError, json.JSONDecodeError) as e:
            err = str(e)
        if err is not None:
            log("OAUTHBEARER token refused: %s" % err)
            self.f.stats.bump("refused")
            ex["step"], ex["error"] = 1, err
            challenge = json.dumps({"status": "invalid_token", "scope": "", "error": err}).encode()
            return challenge, False, 0
        lifetime = self.session_lifetime_ms()
        if lifetime:
            lifetime = max(1, min(lifetime, int((exp - time.time()) * 1000)))
        ex["lifetime_ms"] = lifetime
        return b"", True, lifetime


# --------------------------------------------------------------------------
# Tansu


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pdeathsig():
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def start_tansu(tansu, front_port, log_path):
    last = ""
    for _ in range(3):
        port = free_port()
        logf = open(log_path, "ab")
        proc = subprocess.Popen(
            [tansu, "broker", "--listener-url", "tcp://127.0.0.1:%d" % port,
             "--advertised-listener-url", "tcp://127.0.0.1:%d" % front_port,
             "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, preexec_fn=pdeathsig,
        )
        logf.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last = "tansu exited with %s" % proc.returncode
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc, port
            except OSError:
                time.sleep(0.05)
        else:
            last = "tansu not accepting on 127.0.0.1:%d after 20 s" % port
        stop(proc)
    raise SystemExit("secure_front: cannot start tansu: %s (log: %s)" % (last, log_path))


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where to write certificates, stats and Tansu's log")
    ap.add_argument("--tansu", default=os.environ.get("TANSU_BIN"), help="the tansu binary (default $TANSU_BIN)")
    ap.add_argument("--upstream", default=None,
                    help="host:port of a broker to forward to instead of starting Tansu (its advertised "
                         "addresses are not rewritten)")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--client-auth", action="store_true", help="require a client certificate (with --tls)")
    ap.add_argument("--sasl", action="store_true")
    ap.add_argument("--session-lifetime-ms", type=int, default=0)
    ap.add_argument("--bad-server-signature", action="store_true")
    ap.add_argument("--server-final-error", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="log SASL events on stderr")
    args = ap.parse_args()

    certs = make_certs(args.dir)
    ssl_ctx = None
    if args.tls:
        ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_ctx.load_cert_chain(certs["server_cert"], certs["server_key"])
        if args.client_auth:
            ssl_ctx.verify_mode = ssl.CERT_REQUIRED
            ssl_ctx.load_verify_locations(certs["ca"])

    stats = Stats(os.path.join(args.dir, "stats.json"))
    front = Front(args, stats, ssl_ctx)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(asyncio.start_server(front.handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]

    tansu_proc = None
    if args.upstream:
        host, _, up_port = args.upstream.rpartition(":")
        front.upstream = (host, int(up_port))
    else:
        if not args.tansu:
            raise SystemExit("secure_front: no tansu binary: pass --tansu or set TANSU_BIN")
        tansu_proc, tansu_port = start_tansu(args.tansu, port, os.path.join(args.dir, "tansu.log"))
        front.upstream = ("127.0.0.1", tansu_port)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=watch_stdin, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, loop.stop)

    sys.stdout.write(json.dumps({
        "port": port,
        "tansu": "%s:%d" % front.upstream,
        "stats": stats.path,
        "certs": certs,
    }) + "\n")
    sys.stdout.flush()
    try:
        loop.run_forever()
    finally:
        if tansu_proc is not None:
            stop(tansu_proc)
        server.close()


if __name__ == "__main__":
    main()
