"""Search certificates: what the registry records against an invoice, as of a block, signed.

A certificate answers "what is registered against this invoice key (or fingerprint)?" with every
registration that ever held it, cancelled ones included (id, status, registration block, financed or
not, number of assignments, split parts), as of the mirror's block, with that block's hash and the
ledger head and event count the contract had folded by then. It is issued to the principal who asked:
parties (entity ids) are shown only for registrations that principal may read (a party to it, or an
auditor); everyone else learns what a double-financing check tells them, no more.

The document is JSON. Its ``certificate`` member is signed by the registry operator's key:
``signature = personal_sign(keccak256(canonical_json(certificate)))`` (EIP-191 over the 32-byte
digest), where ``canonical_json`` sorts keys and drops whitespace (``json.dumps(sort_keys=True,
separators=(",", ":"))``; the values are integers, booleans, null and ASCII strings, so this is also
the RFC 8785 form). Anyone verifies it offline::

    registry audit certificate verify certificate.json --issuer 0xOPERATOR

and, with ``--rpc-url``, also checks the block hash and the ledger head against a node of the chain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from registry.auth import Principal
from registry.checks import MirrorNotReady
from registry.domain import Status, is_financed
from registry.errors import RegistryError
from registry.siwe import SECP256K1_N
from registry.store.models import Assignment, Cursor, Receivable, table_of

CERTIFICATE_TYPE: Final = "receivables-registry/search-certificate"
CERTIFICATE_VERSION: Final = 1


class CertificateInvalid(RegistryError):
    """Raised when a certificate is malformed, altered, or not signed by the expected issuer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CertificateQuery:
    """What the certificate is about: exactly one of an invoice key and a fingerprint (32 bytes)."""

    invoice_key: bytes | None = None
    fingerprint: bytes | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.invoice_key, self.fingerprint) if v is not None]
        if len(given) != 1 or len(given[0]) != 32:
            raise ValueError("a certificate query is exactly one 32-byte invoice key or fingerprint")

    def as_json(self) -> dict[str, str | None]:
        return {"invoice_key": _hex(self.invoice_key), "fingerprint": _hex(self.fingerprint)}


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: the bytes that are hashed and signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def certificate_digest(certificate: Mapping[str, Any]) -> bytes:
    return keccak(canonical_json(certificate))


# ---------------------------------------------------------------------------------------- issue


def search(
    conn: Connection, query: CertificateQuery, principal: Principal, *, now: int | None = None
) -> dict[str, Any]:
    """The unsigned certificate body for ``query`` as of the mirror's block, issued to ``principal``.

    Rows are read "as of the cursor block" (``valid_from <= B`` and ``valid_to`` NULL or above B), so
    an indexer committing meanwhile cannot make the registrations disagree with the stated block."""
    cursor = conn.execute(select(table_of(Cursor))).mappings().first()
    if cursor is None:
        raise MirrorNotReady("the mirror has not indexed any block yet: nothing can be certified")
    block = int(cursor["block_number"])
    r = table_of(Receivable)
    as_of_block = and_(r.c.valid_from <= block, or_(r.c.valid_to.is_(None), r.c.valid_to > block))
    matches = (
        r.c.invoice_key == query.invoice_key if query.invoice_key is not None else r.c.fingerprint == query.fingerprint
    )
    rows = [
        dict(row)
        for row in conn.execute(select(r).where(matches, as_of_block).order_by(r.c.registered_block, r.c.id)).mappings()
    ]
    # Split parts carry their parent's debtor and number hash (at any depth), not its key or fingerprint.
    lineages = {(row["debtor"], bytes(row["number_hash"])) for row in rows if row["status"] == Status.SPLIT}
    parts: list[dict[str, Any]] = []
    if lineages:
        parts = [
            dict(row)
            for row in conn.execute(
                select(r)
                .where(
                    r.c.parent_id.is_not(None),
                    or_(*(and_(r.c.debtor == d, r.c.number_hash == h) for d, h in lineages)),
                    as_of_block,
                )
                .order_by(r.c.id)
            ).mappings()
        ]
    a = table_of(Assignment)
    ids = [row["id"] for row in rows + parts]
    assignees: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        for receivable_id, to_entity in conn.execute(
            select(a.c.receivable_id, a.c.to_entity)
            .where(a.c.receivable_id.in_(ids), a.c.block_number <= block)
            .order_by(a.c.block_number, a.c.log_index)
        ):
            assignees[int(receivable_id)].append(int(to_entity))

    def financed(row: Mapping[str, Any], lineage_parts: list[dict[str, Any]]) -> bool:
        parts_financed = any(financed(p, []) or assignees[p["id"]] for p in lineage_parts)
        return is_financed(
            Status(row["status"]), row["holder"], row["creditor"], bool(assignees[row["id"]]), parts_financed
        )

    registrations = []
    for row in rows:
        status = Status(row["status"])
        own_parts = (
            [p for p in parts if p["debtor"] == row["debtor"] and bytes(p["number_hash"]) == bytes(row["number_hash"])]
            if status is Status.SPLIT
            else []
        )
        readable = principal.has("auditor") or (
            principal.entity is not None
            and (
                principal.entity in (row["creditor"], row["debtor"], row["holder"])
                or principal.entity in assignees[row["id"]]
            )
        )
        registrations.append(
            {
                "id": int(row["id"]),
                "status": status.name.lower(),
                "live": status.is_live,
                "registered_block": int(row["registered_block"]),
                "financed": financed(row, own_parts),
                "assignments": len(assignees[row["id"]]),
                "parts": [int(p["id"]) for p in own_parts],
                "supersedes": int(row["supersedes"]) if row["supersedes"] else None,
                "parties": {"creditor": row["creditor"], "debtor": row["debtor"], "holder": row["holder"]}
                if readable
                else None,
            }
        )
    live = [x for x in registrations if x["live"]]
    what = "invoice key" if query.invoice_key is not None else "fingerprint"
    if not registrations:
        statement = f"As of block {block}, nothing is registered against this {what}."
    else:
        statement = (
            f"As of block {block}, {len(registrations)} registration(s) against this {what}, "
            f"{len(live)} live" + (f" (receivable {live[0]['id']}, {live[0]['status']})" if live else "") + "."
        )
    return {
        "type": CERTIFICATE_TYPE,
        "version": CERTIFICATE_VERSION,
        "query": query.as_json(),
        "statement": statement,
        "registered": bool(live),
        "financed": any(x["financed"] for x in live),
        "registrations": registrations,
        "as_of": {
            "block": block,
            "block_hash": cursor["block_hash"],
            "block_timestamp": int(cursor["block_timestamp"]),
            "ledger_head": "0x" + bytes(cursor["ledger_head"]).hex(),
            "ledger_count": int(cursor["ledger_count"]),
        },
        "chain": {"chain_id": int(cursor["chain_id"]), "registry": to_checksum_address(cursor["registry_address"])},
        "issued_to": {"address": principal.address, "entity": principal.entity},
        "issued_at": int(time.time()) if now is None else now,
    }


def sign_certificate(body: Mapping[str, Any], operator: LocalAccount) -> dict[str, Any]:
    """The signed document: ``{"certificate": body + issuer, "digest": ..., "signature": ...}``."""
    certificate = {**body, "issuer": operator.address}
    digest = certificate_digest(certificate)
    signature = operator.sign_message(encode_defunct(primitive=digest)).signature
    return {"certificate": certificate, "digest": "0x" + digest.hex(), "signature": "0x" + bytes(signature).hex()}


def issue_certificate(
    conn: Connection, query: CertificateQuery, principal: Principal, operator: LocalAccount, *, now: int | None = None
) -> dict[str, Any]:
    return sign_certificate(search(conn, query, principal, now=now), operator)


# ---------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate whose signature checked out."""

    issuer: str
    block: int
    block_hash: str
    ledger_head: str
    ledger_count: int
    chain_id: int
    registry: str
    issued_at: int
    statement: str
    registrations: int
    certificate: dict[str, Any]


def load_certificate(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CertificateInvalid("malformed", f"cannot read a certificate from {path}: {exc}") from None
    if not isinstance(document, dict):
        raise CertificateInvalid("malformed", f"{path} is not a certificate document (a JSON object)")
    return document


def verify_certificate(document: Mapping[str, Any], *, issuer: str | None = None) -> VerifiedCertificate:
    """Checks the document offline: well formed, digest of its canonical form, low-s EIP-191
    signature by the ``issuer`` it names, and that issuer is ``issuer`` when given. Raises
    :class:`CertificateInvalid` with a stable ``reason`` otherwise."""
    certificate = document.get("certificate")
    signature_hex = document.get("signature")
    if not isinstance(certificate, dict) or not isinstance(signature_hex, str):
        raise CertificateInvalid("malformed", "a certificate document has 'certificate' and 'signature' members")
    if certificate.get("type") != CERTIFICATE_TYPE or certificate.get("version") != CERTIFICATE_VERSION:
        raise CertificateInvalid("malformed", f"not a {CERTIFICATE_TYPE} version {CERTIFICATE_VERSION}")
    named = certificate.get("issuer")
    if not isinstance(named, str) or not is_address(named):
        raise CertificateInvalid("malformed", "the certificate names no issuer address")
    try:
        digest = certificate_digest(certificate)
        signature = bytes.fromhex(signature_hex.removeprefix("0x"))
    except (TypeError, ValueError) as exc:
        raise CertificateInvalid("malformed", f"the certificate cannot be canonicalised: {exc}") from None
    if "digest" in document and document["digest"] != "0x" + digest.hex():
        raise CertificateInvalid("digest_mismatch", "the certificate's content does not hash to its stated digest")
    if len(signature) != 65:
        raise CertificateInvalid("bad_signature", "a signature is 65 bytes (r, s, v)")
    s = int.from_bytes(signature[32:64], "big")
    if s == 0 or s > SECP256K1_N // 2:
        raise CertificateInvalid("bad_signature", "high-s (malleable) signatures are refused")
    try:
        signer = str(Account.recover_message(encode_defunct(primitive=digest), signature=signature))
    except Exception as exc:  # eth-keys raises several types for garbage
        raise CertificateInvalid("bad_signature", f"the signature does not verify: {exc}") from None
    if signer != to_checksum_address(named):
        raise CertificateInvalid(
            "wrong_signer",
            f"the certificate was altered or not signed by its issuer: signed by {signer}, names {named}",
        )
    if issuer is not None and (not is_address(issuer) or to_checksum_address(issuer) != signer):
        raise CertificateInvalid("wrong_issuer", f"signed by {signer}, not by the expected issuer {issuer}")
    try:
        as_of, chain = certificate["as_of"], certificate["chain"]
        return VerifiedCertificate(
            issuer=signer,
            block=int(as_of["block"]),
            block_hash=str(as_of["block_hash"]),
            ledger_head=str(as_of["ledger_head"]),
            ledger_count=int(as_of["ledger_count"]),
            chain_id=int(chain["chain_id"]),
            registry=str(chain["registry"]),
            issued_at=int(certificate["issued_at"]),
            statement=str(certificate.get("statement", "")),
            registrations=len(certificate["registrations"]),
            certificate=dict(certificate),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CertificateInvalid("malformed", f"the signed certificate lacks a field: {exc}") from None


def check_against_chain(verified: VerifiedCertificate, rpc_url: str) -> list[str]:
    """What a node of the chain disagrees with: chain id, the block's hash, the ledger at that block.
    Empty when everything matches."""
    from registry.chain.abi import ContractAbi
    from registry.chain.client import ChainClient
    from registry.chain.compiler import artifact

    problems: list[str] = []
    with ChainClient(rpc_url) as chain:
        if chain.chain_id != verified.chain_id:
            return [f"the node is on chain {chain.chain_id}, the certificate on chain {verified.chain_id}"]
        block = chain.get_block(verified.block)
        if block["hash"] != verified.block_hash:
            problems.append(f"block {verified.block} is {block['hash']} on the chain, {verified.block_hash} in it")
        abi = ContractAbi(artifact("ReceivableRegistry").abi)
        head, count = abi.decode_output(
            "ledger", chain.call(verified.registry, abi.encode_call("ledger", []), block=verified.block)
        )
        if "0x" + bytes(head).hex() != verified.ledger_head or int(count) != verified.ledger_count:
            problems.append(
                f"the ledger at block {verified.block} is 0x{bytes(head).hex()} after {count} events on the chain, "
                f"{verified.ledger_head} after {verified.ledger_count} in the certificate"
            )
    return problems
