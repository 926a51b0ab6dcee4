"""E-mail over SMTP with the standard library: one message per action, at most once.

``messaging.email.smtp`` is a URL: ``smtp://user:pass@host:587`` (STARTTLS, required) or
``smtps://user:pass@host:465`` (TLS from the start); user and password are optional and
percent-decoded. TLS is not optional: a server that does not offer STARTTLS (or a man in the
middle that strips it) gets neither the password nor the message, only with ``insecure: true``
(a trusted local relay) does the client go on in plain text, and ``connector check`` warns about
it. Certificates are verified against the system's CAs or ``ca_file``. The whole session of one
message (connect, TLS, login, data) has a total deadline.

The Message-ID is derived from the action key, so a copy that does get sent twice can be
recognised as one. SMTP cannot be asked later whether a message went out, so failures are split
by phase: before the message data was handed over nothing was sent (transient, retried); a
failure after that is uncertain and is never retried.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

from connector.errors import AuthError, PermanentError, Rejected, TransientError, UpstreamError
from connector.ports import Context
from connector.redact import add_secret
from connector.upstream import Deadline

SYSTEM = "smtp"
COUNTER = "sms"
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True)
class SmtpUrl:
    secure: bool  # smtps: TLS from the first byte
    host: str
    port: int
    user: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpUrl:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise PermanentError("messaging.email.smtp must look like smtp://user:pass@host:587 or smtps://host:465",
                             system=SYSTEM, obj="config")
    secure = parts.scheme == "smtps"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    add_secret(password)
    return SmtpUrl(secure, parts.hostname, parts.port or (465 if secure else 25), user, password)


def valid_address(addr: str | None) -> str | None:
    """The bare address when ``addr`` is one plausible mailbox (no header injection), else None."""
    if not addr or not isinstance(addr, str) or any(c in addr for c in "\r\n\0"):
        return None
    _, bare = parseaddr(addr)
    bare = bare.strip()
    if not bare or len(bare) > 254 or not _ADDRESS.match(bare) or ".." in bare:
        return None
    return bare


def message_id(action_key: str, sender: str) -> str:
    """A Message-ID that is the same every time the same action is sent."""
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else "connector.local"
    return f"<cn-{hashlib.sha256(action_key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


class TlsMissing(smtplib.SMTPException):
    """The server did not offer STARTTLS and plain text was not allowed."""


def classify(exc: BaseException, *, what: str, handed_over: bool, deadline: Deadline | None = None) -> UpstreamError:
    """The one place that maps an SMTP failure onto the error tree.

    ``handed_over`` is True once the message data went to the server: from then on a failure is
    uncertain and must not be retried (messages are at most once).
    """
    kw: dict[str, Any] = {"system": SYSTEM, "obj": what}
    if isinstance(exc, TlsMissing):
        return PermanentError("the server does not offer STARTTLS: neither the password nor the message was sent in "
                              "clear text (use smtps://, a server with STARTTLS, or insecure: true for a trusted local relay)",
                              **kw)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(f"the server's TLS certificate is not trusted ({exc.verify_message}); set "
                              f"messaging.email.ca_file to the CA that signed it", **kw)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return AuthError(f"login refused ({exc.smtp_code})", code=exc.smtp_code, **kw)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"server does not support it: {exc}", **kw)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        code = codes[0] if codes else None
        if code is not None and 400 <= code < 500:
            return TransientError(f"recipient deferred ({code})", code=code, **kw)
        return Rejected(f"recipient refused ({code})", code=code, **kw)
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        if 400 <= code < 500:
            return TransientError(f"deferred: {text[:120]}", code=code, **kw)
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return PermanentError(f"sender refused: {text[:120]}", code=code, **kw)
        return Rejected(f"refused: {text[:120]}", code=code, **kw)
    late = f"no complete answer within {deadline.seconds:g} s" if deadline is not None and deadline.expired else None
    if handed_over:
        return PermanentError(f"connection lost after the message was handed over ({late or type(exc).__name__}); "
                              f"delivery uncertain, not resent", **kw)
    if late:
        return TransientError(f"{late} (the server is too slow or drips its answer); will retry", **kw)
    if isinstance(exc, (smtplib.SMTPException, OSError, socket.timeout, ssl.SSLError)):
        return TransientError(f"cannot reach the SMTP server ({type(exc).__name__})", **kw)
    return PermanentError(f"{type(exc).__name__}", **kw)


class _Smtp(smtplib.SMTP):
    """``smtplib.SMTP`` whose socket a :class:`Deadline` can cut (the greeting is read in ``__init__``)."""

    def __init__(self, host: str, port: int, *, timeout: float, deadline: Deadline):
        self._deadline = deadline
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._deadline.watch(lambda: self.sock)
        return super()._get_socket(host, port, timeout)


class _SmtpSsl(smtplib.SMTP_SSL):
    def __init__(self, host: str, port: int, *, timeout: float, deadline: Deadline, context: ssl.SSLContext):
        self._deadline = deadline
        super().__init__(host, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._deadline.watch(lambda: self.sock)
        return super()._get_socket(host, port, timeout)


class SmtpClient:
    """Sends e-mail (plain text, or with an HTML alternative and inline images); counts each SMTP session.

    ``timeout`` bounds one whole session (connect, TLS, login, one message); ``ssl_context``
    overrides the verifying context built from the system's CAs and ``ca_file``.
    """

    def __init__(self, url: str, sender: str, ctx: Context, *, timeout: float = 30.0, insecure: bool = False,
                 ca_file: str | None = None, ssl_context: ssl.SSLContext | None = None):
        self.url = parse_smtp_url(url)
        self.sender = sender
        self.counter = ctx.counter(COUNTER)
        self.timeout = timeout
        self.insecure = insecure
        self.ca_file = ca_file or None
        self._ssl_context = ssl_context

    def context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context(cafile=self.ca_file)

    def _connect(self, deadline: Deadline) -> smtplib.SMTP:
        u = self.url
        if u.secure:
            conn: smtplib.SMTP = _SmtpSsl(u.host, u.port, timeout=self.timeout, deadline=deadline, context=self.context())
        else:
            conn = _Smtp(u.host, u.port, timeout=self.timeout, deadline=deadline)
        try:
            conn.ehlo()
            if not u.secure:
                if conn.has_extn("starttls"):
                    conn.starttls(context=self.context())
                    conn.ehlo()
                elif not self.insecure:
                    raise TlsMissing("no STARTTLS")
            if u.user:
                conn.login(u.user, u.password or "")
        except BaseException:
            conn.close()
            raise
        return conn

    def build(self, *, to: str, subject: str, text: str, action_key: str, html: str | None = None,
              images: dict[str, bytes] | None = None) -> EmailMessage:
        """Plain text; with ``html`` also an HTML alternative whose ``cid:`` images travel inside the message."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = message_id(action_key, valid_address(self.sender) or self.sender)
        msg.set_content(text)
        if html:
            msg.add_alternative(html, subtype="html")
            body = msg.get_payload()[-1]
            for cid, data in (images or {}).items():
                body.add_related(data, maintype="image", subtype="png", cid=f"<{cid}>", filename=f"{cid}.png", disposition="inline")
        return msg

    def send(self, *, to: str, subject: str, text: str, action_key: str, html: str | None = None,
             images: dict[str, bytes] | None = None) -> str:
        """Send one message; returns its Message-ID."""
        bare = valid_address(to)
        if bare is None:
            raise Rejected("not a valid e-mail address", system=SYSTEM, obj="send")
        sender = valid_address(self.sender)
        if sender is None:
            raise PermanentError("messaging.email.from is not a valid address", system=SYSTEM, obj="config")
        if any(c in subject for c in "\r\n"):
            subject = " ".join(subject.splitlines())
        msg = self.build(to=bare, subject=subject, text=text, action_key=action_key, html=html, images=images)
        what = f"send to {bare.split('@', 1)[1]}"
        handed_over = False
        self.counter.add("smtp send")
        with Deadline(self.timeout) as deadline:
            try:
                conn = self._connect(deadline)
            except Exception as e:  # classified below: connect/TLS/login failures send nothing  # noqa: BLE001
                raise classify(e, what=what, handed_over=False, deadline=deadline) from None
            try:
                conn.mail(sender)
                code, resp = conn.rcpt(bare)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({bare: (code, resp)})
                handed_over = True
                code, resp = conn.data(msg.as_bytes(policy=SMTP_POLICY))  # CRLF line ends on the wire
                if code != 250:
                    raise smtplib.SMTPDataError(code, resp)
            except Exception as e:  # noqa: BLE001
                if isinstance(e, smtplib.SMTPDataError):
                    handed_over = False  # the server answered: it refused the data, nothing was sent
                raise classify(e, what=what, handed_over=handed_over, deadline=deadline) from None
            finally:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()
        return msg["Message-ID"]

    def noop(self) -> str:
        """Connect, secure, log in and NOOP: proves the relay, its TLS and the credentials."""
        self.counter.add("smtp noop")
        with Deadline(self.timeout) as deadline:
            try:
                conn = self._connect(deadline)
                try:
                    code, _ = conn.noop()
                    tls = self.url.secure or isinstance(conn.sock, ssl.SSLSocket)
                finally:
                    conn.quit()
            except Exception as e:  # noqa: BLE001
                raise classify(e, what="noop", handed_over=False, deadline=deadline) from None
        return f"{self.url.host}:{self.url.port} answered {code}" + ("" if tls else " (plain text: insecure: true)")

    def plain_text_allowed(self) -> bool:
        """True when the config lets this client talk without TLS (``check`` warns)."""
        return self.insecure and not self.url.secure
