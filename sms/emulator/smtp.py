"""A tiny loopback SMTP server that records what it receives (``smtpd`` is gone in Python 3.12).

Speaks enough ESMTP for :mod:`smtplib`: EHLO/HELO, STARTTLS and implicit TLS (with a
``certificate``; :func:`self_signed` makes one), AUTH PLAIN/LOGIN (when credentials are set),
MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT. Test switches: ``offer_starttls`` (False: a
server, or a man in the middle, that strips STARTTLS), ``reject`` (550 for these recipients),
``defer`` (451), ``drop_after_data`` (close the connection after the message data, before the
reply: the uncertain case). ``auth_attempts`` counts AUTH commands received, ``verbs`` every command.
"""

from __future__ import annotations

import base64
import email
import os
import socketserver
import ssl
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.policy import default as default_policy

from connector import loopback


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: Message
    tls: bool = False  # the message came over TLS (STARTTLS or implicit)


def _addr(arg: str) -> str:
    """``FROM:<a@b> SIZE=12`` -> ``a@b``."""
    _, _, rest = arg.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1:rest.find(">")] if ">" in rest else rest[1:]
    return rest.split(" ", 1)[0]


def self_signed(host: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """A throw-away certificate and key (PEM) for ``host`` and ``localhost``, valid for a day."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connector test SMTP")])
    now = datetime.now(UTC)
    alt = [x509.DNSName("localhost")]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1)).add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


class SmtpSink:
    def __init__(self, *, user: str | None = None, password: str | None = None,
                 certificate: tuple[bytes, bytes] | None = None, offer_starttls: bool = True, implicit_tls: bool = False):
        self.user = user
        self.password = password
        self.messages: list[ReceivedMail] = []
        self.reject: set[str] = set()
        self.defer: set[str] = set()
        self.drop_after_data = False
        self.sessions = 0
        self.auth_attempts = 0
        self.verbs: list[str] = []
        self.offer_starttls = offer_starttls
        self.implicit_tls = implicit_tls
        self.context: ssl.SSLContext | None = None
        self.ca_file: str | None = None  # the certificate as PEM: what a client trusts
        self._tmp: str | None = None
        if certificate is not None:
            self._tmp = tempfile.mkdtemp(prefix="connector-smtp-")
            cert_path, key_path = os.path.join(self._tmp, "cert.pem"), os.path.join(self._tmp, "key.pem")
            for path, data in ((cert_path, certificate[0]), (key_path, certificate[1])):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert_path, key_path)
            self.ca_file = cert_path
        elif implicit_tls:
            raise ValueError("implicit_tls needs a certificate")
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "SMTP sink not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        cred = f"{self.user}:{self.password}@" if self.user else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{cred}127.0.0.1:{self.port}"

    def start(self) -> str:
        sink = self

        class Handler(_Session):
            owner = sink

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address) -> None:  # a refused TLS handshake is expected
                return

        self._server = loopback.serve(Server(("127.0.0.1", 0), Handler), "smtp-sink")
        return self.url

    def stop(self) -> None:
        loopback.stop(self._server)
        self._server = None
        if self._tmp:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def record(self, mail_from: str, rcpts: list[str], data: bytes, tls: bool = False) -> None:
        msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=default_policy)
        with self._lock:
            self.messages.append(ReceivedMail(mail_from, list(rcpts), data, msg, tls))


class _Session(socketserver.StreamRequestHandler):
    owner: SmtpSink
    timeout = 30
    disable_nagle_algorithm = True

    def setup(self) -> None:
        if self.owner.implicit_tls and self.owner.context is not None:
            self.request = self.owner.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def _starttls(self) -> None:
        self.rfile.close()
        self.connection = self.owner.context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(self.connection)

    def say(self, line: str) -> None:
        self.wfile.write(line.encode("utf-8") + b"\r\n")

    def readline(self) -> str | None:
        raw = self.rfile.readline(65536)
        if not raw:
            return None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def handle(self) -> None:
        owner = self.owner
        with owner._lock:
            owner.sessions += 1
        authed = owner.user is None
        tls = owner.implicit_tls
        mail_from: str | None = None
        rcpts: list[str] = []
        self.say("220 127.0.0.1 connector test ESMTP")
        while True:
            line = self.readline()
            if line is None:
                return
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            with owner._lock:
                owner.verbs.append(verb)
            starttls = owner.context is not None and owner.offer_starttls and not tls
            if verb == "EHLO":
                lines = (["127.0.0.1", "8BITMIME", "SIZE 10485760"] + (["STARTTLS"] if starttls else [])
                         + (["AUTH PLAIN LOGIN"] if owner.user else []))
                for i, text in enumerate(lines):
                    self.say(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
            elif verb == "HELO":
                self.say("250 127.0.0.1")
            elif verb == "STARTTLS":
                if not starttls:
                    self.say("502 5.5.1 STARTTLS not offered")
                    continue
                self.say("220 2.0.0 Ready to start TLS")
                try:
                    self._starttls()
                except (OSError, ssl.SSLError):
                    return  # the client refused our certificate
                tls, authed, mail_from, rcpts = True, owner.user is None, None, []
            elif verb == "AUTH":
                with owner._lock:
                    owner.auth_attempts += 1
                authed = self._auth(arg)
                self.say("235 2.7.0 Authentication successful" if authed else "535 5.7.8 Authentication failed")
            elif verb == "MAIL":
                if not authed:
                    self.say("530 5.7.0 Authentication required")
                    continue
                mail_from, rcpts = _addr(arg), []
                self.say("250 OK")
            elif verb == "RCPT":
                if mail_from is None:
                    self.say("503 5.5.1 MAIL first")
                    continue
                to = _addr(arg)
                if to.lower() in owner.reject:
                    self.say("550 5.1.1 No such user")
                elif to.lower() in owner.defer:
                    self.say("451 4.3.0 Try again later")
                else:
                    rcpts.append(to)
                    self.say("250 OK")
            elif verb == "DATA":
                if not rcpts:
                    self.say("503 5.5.1 RCPT first")
                    continue
                self.say("354 End data with <CR><LF>.<CR><LF>")
                chunks: list[bytes] = []
                while True:
                    raw = self.rfile.readline(1 << 20)
                    if not raw:
                        return
                    if raw in (b".\r\n", b".\n"):
                        break
                    chunks.append(raw[1:] if raw.startswith(b"..") else raw)
                if owner.drop_after_data:
                    return  # the message is kept by nobody and the client never hears back
                owner.record(mail_from or "", rcpts, b"".join(chunks), tls)
                mail_from, rcpts = None, []
                self.say("250 OK queued")
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self.say("250 OK")
            elif verb == "NOOP":
                self.say("250 OK")
            elif verb == "QUIT":
                self.say("221 Bye")
                return
            else:
                self.say("502 5.5.2 Command not recognized")

    def _auth(self, arg: str) -> bool:
        owner = self.owner
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        try:
            if mech == "PLAIN":
                if not initial:
                    self.say("334 ")
                    initial = self.readline() or ""
                _, user, password = base64.b64decode(initial).decode("utf-8").split("\0")
            elif mech == "LOGIN":
                if initial:
                    user = base64.b64decode(initial).decode("utf-8")
                else:
                    self.say("334 VXNlcm5hbWU6")
                    user = base64.b64decode(self.readline() or "").decode("utf-8")
                self.say("334 UGFzc3dvcmQ6")
                password = base64.b64decode(self.readline() or "").decode("utf-8")
            else:
                return False
        except (ValueError, UnicodeDecodeError):
            return False
        return user == owner.user and password == owner.password

