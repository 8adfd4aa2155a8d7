"""Who is calling: sign-in with the user's key (EIP-4361), short-lived session tokens, principals.

The session token is bound to the address and signed by the service (HMAC-SHA256); it carries no
roles. Every request resolves the principal afresh from the mirror of the on-chain participant
registry, so a suspended entity or a revoked key is refused at once, not at token expiry: one indexed
statement (the address's current key joined with its entity's current row), compiled once and run on
the driver's cursor. What is cached is only what cannot change: that a token string's MAC verifies and
whom and until when it names (its expiry is still compared with the clock on every request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, bindparam, insert, select, update

from registry.domain import EntityStatus, KeyStatus
from registry.errors import RegistryError
from registry.siwe import SignInError, SiweMessage, new_nonce, verify
from registry.store.models import AuthNonce, Participant, ParticipantKey, table_of

NONCE_TTL = 300.0
SESSION_TTL = 900.0
TOKEN_CACHE_SIZE = 10_000
"""Verified tokens remembered (per API process); the whole cache is dropped when it is full."""


class AuthError(RegistryError):
    """Raised when a caller cannot be authenticated; ``reason`` is a stable machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Forbidden(RegistryError):
    """Raised when an authenticated caller may not see or do what it asked."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its key, its entity and roles (from the mirror), admin or not."""

    address: str
    entity: int | None
    roles: frozenset[str] = field(default_factory=frozenset)
    is_admin: bool = False

    def has(self, role: str) -> bool:
        return role in self.roles

    @property
    def label(self) -> str:
        return f"entity {self.entity}" if self.entity is not None else self.address


@dataclass(frozen=True)
class Challenge:
    nonce: str
    message: str
    expires_at: float


class AuthService:
    """Issues challenges, verifies sign-ins, mints and checks session tokens."""

    def __init__(
        self,
        engine: Engine,
        *,
        chain_id: int,
        domain: str,
        uri: str,
        secret: bytes,
        admins: frozenset[str] = frozenset(),
        session_ttl: float = SESSION_TTL,
    ) -> None:
        self.engine = engine
        self.chain_id = chain_id
        self.domain = domain
        self.uri = uri
        self.secret = secret
        self.admins = frozenset(a.lower() for a in admins)
        self.session_ttl = session_ttl
        self._verified: dict[str, tuple[str, float]] = {}  # token -> (address, expiry): its MAC verified
        keys, parts = table_of(ParticipantKey), table_of(Participant)
        statement = (
            select(keys.c.entity_id, keys.c.status, parts.c.status, parts.c.roles)
            .select_from(keys.outerjoin(parts, and_(parts.c.entity_id == keys.c.entity_id, parts.c.valid_to.is_(None))))
            .where(keys.c.address == bindparam("address"), keys.c.valid_to.is_(None))
        )
        compiled = statement.compile(dialect=engine.dialect)
        self._principal_sql = str(compiled)
        self._positional = compiled.positiontup is not None

    # ------------------------------------------------------------------ sign-in

    def challenge(self, address: str) -> Challenge:
        """A single-use nonce and the exact message the user's key must sign."""
        nonce = new_nonce()
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(insert(table_of(AuthNonce)).values(nonce=nonce, issued_at=now, expires_at=now + NONCE_TTL))
        issued = datetime.fromtimestamp(now, UTC)
        message = SiweMessage(
            domain=self.domain,
            address=address,
            statement="Sign in to the receivables registry.",
            uri=self.uri,
            chain_id=self.chain_id,
            nonce=nonce,
            issued_at=issued,
            expiration_time=issued + timedelta(seconds=NONCE_TTL),
        )
        return Challenge(nonce, message.text(), now + NONCE_TTL)

    def login(self, message: str, signature: bytes) -> tuple[str, Principal]:
        """Verifies a signed sign-in message and consumes its nonce; returns (token, principal)."""
        # Only the canonical recovery ids: eth-keys would also take any v >= 35 as an EIP-155 one,
        # so one signature would have many accepted encodings.
        if len(signature) == 65 and signature[64] not in (0, 1, 27, 28):
            raise AuthError("bad_signature", "the signature's recovery id (v) must be 27 or 28 (or 0 or 1)")
        try:
            parsed = verify(message, signature, domain=self.domain, uri=self.uri, chain_id=self.chain_id)
        except SignInError as exc:
            raise AuthError(exc.reason, str(exc)) from None
        now = time.time()
        table = table_of(AuthNonce)
        with self.engine.begin() as conn:
            consumed = conn.execute(
                update(table)
                .where(table.c.nonce == parsed.nonce, table.c.used_at.is_(None), table.c.expires_at > now)
                .values(used_at=now)
            ).rowcount
        if consumed != 1:
            raise AuthError("bad_nonce", "the nonce is unknown, expired or already used: ask for a new challenge")
        principal = self.principal(parsed.address)
        return self._token(parsed.address), principal

    # ------------------------------------------------------------------ sessions

    def _token(self, address: str) -> str:
        now = int(time.time())
        body = {"sub": address, "iat": now, "exp": now + int(self.session_ttl), "sid": secrets.token_hex(8)}
        payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.new(self.secret, payload, hashlib.sha256).digest()).rstrip(b"=")
        return (payload + b"." + mac).decode()

    def authenticate(self, token: str) -> Principal:
        """The principal of a session token, resolved from the mirror now."""
        known = self._verified.get(token)
        if known is None:
            known = self._verify(token)
            if len(self._verified) >= TOKEN_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = known
        address, expires = known
        if expires < time.time():
            raise AuthError("expired_token", "the session has expired: sign in again")
        return self.principal(address)

    def _verify(self, token: str) -> tuple[str, float]:
        """(address, expiry) of a token whose MAC verifies; refuses any other."""
        try:
            payload, mac = token.encode().split(b".", 1)
        except (ValueError, UnicodeEncodeError):
            raise AuthError("bad_token", "malformed session token") from None
        expected = base64.urlsafe_b64encode(hmac.new(self.secret, payload, hashlib.sha256).digest()).rstrip(b"=")
        if not hmac.compare_digest(mac, expected):
            raise AuthError("bad_token", "the session token's signature does not verify")
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        except ValueError:
            raise AuthError("bad_token", "malformed session token") from None
        if not isinstance(body, dict) or not isinstance(body.get("sub"), str):
            raise AuthError("bad_token", "malformed session token")
        expires = body.get("exp", 0)
        if not isinstance(expires, (int, float)) or isinstance(expires, bool):
            raise AuthError("bad_token", "malformed session token")
        return body["sub"], float(expires)

    def principal(self, address: str) -> Principal:
        """The entity and roles behind ``address`` as the mirror knows them now; refuses revoked keys
        and suspended entities."""
        is_admin = address.lower() in self.admins
        # On the pooled driver connection itself (no SQLAlchemy Connection around it: on every request).
        conn = self.engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self._principal_sql, (address,) if self._positional else {"address": address})
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            conn.close()
        if row is None:
            if is_admin:
                return Principal(address, None, frozenset(), True)
            raise AuthError("unknown_key", f"{address} is not a key of any participant")
        entity_id, key_status, entity_status, roles = row
        if key_status != KeyStatus.ACTIVE:
            raise AuthError("key_revoked", f"the key {address} has been revoked")
        if entity_status != EntityStatus.ACTIVE:  # (None: no current row of the entity)
            raise AuthError("entity_suspended", f"participant {entity_id} is suspended")
        return Principal(address, int(entity_id), frozenset(r for r in roles.split(",") if r), is_admin)
