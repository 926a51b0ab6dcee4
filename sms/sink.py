"""The message sink (system ``sms``): SMS through TurboSMS or the log, e-mail through SMTP or the log.

Messages to people are at most once. TurboSMS sends carry a ``sequence_id`` derived from the
action key, so a resend of the same action is answered with the earlier result instead of a second
SMS; that is what makes :meth:`MessageSink.reconcile` safe for TurboSMS. SMTP has no such key and
cannot be asked afterwards, so an interrupted e-mail is reported, never resent.
"""

from __future__ import annotations

import base64
import logging

from connector.config import Messaging
from connector.errors import PermanentError, Rejected
from connector.phones import is_mobile, normalize
from connector.ports import ActionResult, Context, OneByOneSink, PlannedAction
from sms.log import LogProvider
from sms.smtp import SmtpClient, valid_address
from sms.turbosms import TurboSmsClient, delivery_state, sequence_id

SYSTEM = "sms"
log = logging.getLogger("sms.sink")


class MessageSink(OneByOneSink):
    system = SYSTEM

    def __init__(self, messaging: Messaging, ctx: Context, *, phone_region: str = "UA",
                 turbosms: TurboSmsClient | None = None, log_provider: LogProvider | None = None):
        self.messaging = messaging
        self.ctx = ctx
        self.region = phone_region
        sms = messaging.sms
        self.sms_provider = sms.provider if sms else None
        self.turbosms = turbosms or (TurboSmsClient(sms, ctx) if sms and sms.provider == "turbosms" else None)
        self.log_provider = log_provider or LogProvider(ctx)
        email = messaging.email
        self.smtp = SmtpClient(email.smtp, email.from_, ctx, insecure=email.insecure, ca_file=email.ca_file) if email else None

    def supports(self, action_type: str) -> bool:
        if action_type == "sms":
            return self.sms_provider in ("turbosms", "log")
        if action_type == "email":
            return self.smtp is not None
        return False

    # ------------------------------------------------------------ execute

    def execute(self, action: PlannedAction) -> ActionResult:
        if action.type == "sms":
            return self._sms(action)
        if action.type == "email":
            return self._email(action)
        raise PermanentError(f"cannot execute {action.type!r}", system=SYSTEM, obj=action.key)

    def _sms_target(self, action: PlannedAction) -> tuple[str, str]:
        p = action.payload
        phone = normalize(str(p.get("phone") or ""), self.region)
        if phone is None or not is_mobile(phone):
            raise Rejected("not a mobile number", system=SYSTEM, obj=f"sms {action.key}")
        text = str(p.get("text") or "").strip()
        if not text:
            raise Rejected("empty text", system=SYSTEM, obj=f"sms {action.key}")
        return phone, text

    def _sms(self, action: PlannedAction) -> ActionResult:
        phone, text = self._sms_target(action)
        if self.sms_provider == "log":
            mid = self.log_provider.send(channel="sms", to=phone, text=text, action_key=action.key)
            return ActionResult(remote_id=mid, status="delivered", detail="log provider: not sent")
        if self.turbosms is None:
            raise PermanentError(f"sms provider {self.sms_provider!r} is not handled here", system=SYSTEM, obj=action.key)
        res = self.turbosms.send(phone, text, seq_id=sequence_id(action.key))
        detail = "turbosms: accepted" + (" (earlier result of the same request)" if res.replayed else "")
        return ActionResult(remote_id=res.message_id, status="sent", detail=detail)

    def _email(self, action: PlannedAction) -> ActionResult:
        p = action.payload
        to = valid_address(str(p.get("to") or ""))
        if to is None:
            raise Rejected("not a valid e-mail address", system=SYSTEM, obj=f"email {action.key}")
        subject, text = str(p.get("subject") or ""), str(p.get("text") or "")
        if not text.strip():
            raise Rejected("empty text", system=SYSTEM, obj=f"email {action.key}")
        if self.smtp is None:
            raise PermanentError("e-mail is not configured", system=SYSTEM, obj=action.key)
        images = {cid: base64.b64decode(data) for cid, data in (p.get("images") or {}).items()}
        mid = self.smtp.send(to=to, subject=subject, text=text, action_key=action.key, html=p.get("html") or None, images=images)
        # SMTP acceptance is all we will ever learn; "done", not "sent", so it is not polled for delivery.
        return ActionResult(remote_id=mid, status="done", detail="accepted by the SMTP server")

    # ------------------------------------------------------------ after a crash

    def reconcile(self, action: PlannedAction) -> ActionResult | None:
        if action.type == "sms" and self.sms_provider == "log":
            entry = self.log_provider.find(action.key)
            return ActionResult(remote_id=entry["id"], status="delivered", detail="log provider: found in outbox") if entry else None
        if action.type == "sms" and self.turbosms is not None:
            # The same sequence_id: TurboSMS answers 507 with the earlier result if the first request
            # arrived, and sends exactly once if it did not. Either way, one SMS.
            phone, text = self._sms_target(action)
            res = self.turbosms.send(phone, text, seq_id=sequence_id(action.key))
            return ActionResult(remote_id=res.message_id, status="sent",
                                detail="reconciled: " + ("earlier request found" if res.replayed else "first request was lost; sent once now"))
        raise PermanentError("SMTP cannot tell whether an interrupted message went out; not resent",
                             system="smtp", obj=action.key)

    # ------------------------------------------------------------ delivery (connector.ports.DeliveryTracking)

    def delivery(self, sent: list[tuple[str, str]]) -> dict[str, ActionResult]:
        """Final states of TurboSMS messages; keys still in transit are omitted."""
        if self.turbosms is None:
            return {}
        ours = [(key, rid) for key, rid in sent if rid and "@" not in rid and not rid.startswith("log-")]
        if not ours:
            return {}
        items = self.turbosms.status(rid for _, rid in ours)
        out: dict[str, ActionResult] = {}
        for key, rid in ours:
            item = items.get(rid)
            if item is None:
                continue
            state, detail = delivery_state(item)
            if state is not None:
                out[key] = ActionResult(remote_id=rid, status=state, detail=detail)
        return out
