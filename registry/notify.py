"""Delivery of notices: signed webhooks (httpx) and e-mail (smtplib), one attempt at a time.

Delivery is **at least once**: the worker records a send only after the receiver answered, so a crash
between the two sends the notice again. Every delivery therefore carries the notice id as an
idempotency key (``X-Registry-Notice-Id`` on webhooks, the ``Message-ID`` and ``X-Registry-Notice-Id``
headers on e-mail): a receiver that remembers the ids it processed sees each notice exactly once.

A webhook body is signed with HMAC-SHA256 over ``"{timestamp}.{body}"`` and sent as
``X-Registry-Signature: t=<unix seconds>,v1=<hex>``; :func:`verify_signature` is the receiver's check
(reject a stale timestamp to stop replays).
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import Protocol

import httpx

from registry.errors import RegistryError

NOTICE_ID_HEADER = "X-Registry-Notice-Id"
SIGNATURE_HEADER = "X-Registry-Signature"


class DeliveryFailed(RegistryError):
    """Raised when a receiver refused a notice or could not be reached (the attempt is retried)."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, *, now: float, tolerance: float = 300.0) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` seconds old."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    stamp = parts.get("t", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(secret, body, int(stamp)).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: base, 2 base, 4 base, ... up to cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Outgoing:
    """One notice on its way to one subscription."""

    notice_id: str
    kind: str
    subject: str
    body: bytes  # canonical JSON of the notice
    text: str  # human-readable summary (e-mail body)


class Transport(Protocol):
    def send(self, target: str, message: Outgoing) -> None:
        """Deliver or raise :class:`DeliveryFailed`."""


class WebhookTransport:
    """POSTs the JSON body, signed; any 2xx answer is a delivery."""

    def __init__(self, secret: bytes, *, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self.secret = secret
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)

    def send(self, target: str, message: Outgoing) -> None:
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            NOTICE_ID_HEADER: message.notice_id,
            "Idempotency-Key": message.notice_id,
            SIGNATURE_HEADER: sign(self.secret, message.body, stamp),
        }
        try:
            answer = self.client.post(target, content=message.body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= answer.status_code < 300:
            raise DeliveryFailed(f"HTTP {answer.status_code} from {target}: {answer.text[:200]}")

    def close(self) -> None:
        self.client.close()


class SmtpTransport:
    """Sends a plain-text e-mail per notice through one SMTP server (a connection per message)."""

    def __init__(self, host: str, port: int, sender: str, *, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self.domain = sender.rpartition("@")[2] or "localhost"

    def send(self, target: str, message: Outgoing) -> None:
        # Lines up to SMTP's 998 characters: a 64-hex Message-ID is not folded (some servers mangle folds).
        mail = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
        mail["From"] = self.sender
        mail["To"] = target
        mail["Subject"] = message.subject
        mail["Message-ID"] = f"<{message.notice_id}@{self.domain}>"
        mail[NOTICE_ID_HEADER] = message.notice_id
        mail.set_content(message.text)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
