"""Typed client of the registry contract: one method per contract function.

Writes take the acting user's ``LocalAccount`` first and sign locally; reads take an optional
``block`` to pin the call to a past block. Every revert surfaces as the Python exception named
after the Solidity custom error (``registry.chain.reverts``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from registry.chain.abi import AbiError, ContractAbi
from registry.chain.client import BlockId, ChainClient, PendingTx, TxResult
from registry.chain.compiler import artifact
from registry.chain.deployment import Deployment
from registry.chain.reverts import ContractRevert, decode_revert
from registry.domain import (
    ClaimStatus,
    DisputeReason,
    DisputeResolution,
    EntityStatus,
    KeyStatus,
    Role,
    Status,
)
from registry.errors import ChainError
from registry.invoice import Invoice, RegistrationInput
from registry.types import EntityId, MinorUnits, ReceivableId, UnixTime

ZERO32 = bytes(32)

# Gas limits for pipelined batch registration (no per-transaction estimate on the fast path).
# Measured (scripts/gas_report.py): about 85k per accepted line in batches of 100 with one debtor; a
# new debtor in a batch adds its cold reads, a refused line costs far less. The margin covers both.
BATCH_GAS_BASE = 80_000
BATCH_GAS_PER_LINE = 95_000
# Hardhat's node caps a transaction at 2**24 gas (EIP-7825); the default batch stays under it on any
# node (80k + 100 x 95k = 9.58M) and 100 lines is also about the cheapest size per line (the fixed
# cost of a transaction against memory growth inside one). Anvil takes larger batches (up to the
# block gas limit and MAX_BATCH_SIZE = 500): pass ``batch_size`` explicitly for those.
TX_GAS_CAP = 16_777_216
DEFAULT_BATCH_SIZE = 100
if BATCH_GAS_BASE + BATCH_GAS_PER_LINE * DEFAULT_BATCH_SIZE > TX_GAS_CAP:
    raise AssertionError("the default registerBatch would exceed Hardhat's per-transaction gas cap")


@dataclass(frozen=True)
class ReceivableState:
    """IReceivableRegistry.Receivable as Python values."""

    id: ReceivableId
    creditor: EntityId
    debtor: EntityId
    holder: EntityId
    status: Status
    recourse: bool
    due_date: UnixTime
    face_value: MinorUnits
    paid: MinorUnits

    @property
    def unpaid(self) -> MinorUnits:
        return MinorUnits(self.face_value - self.paid)


@dataclass(frozen=True)
class EntityInfo:
    """IParticipantRegistry.Entity."""

    id: EntityId
    registration_hash: bytes
    status: EntityStatus
    active_keys: int


@dataclass(frozen=True)
class KeyInfo:
    entity: EntityId
    status: KeyStatus
    can_act: bool


@dataclass(frozen=True)
class PaymentClaim:
    id: int
    receivable_id: ReceivableId
    payee: EntityId
    status: ClaimStatus
    amount: MinorUnits


@dataclass(frozen=True)
class LineOutcome:
    """The outcome of one line of a batch registration: an id, or the error that refused it."""

    line: int
    id: ReceivableId | None
    error: ContractRevert | None

    @property
    def accepted(self) -> bool:
        return self.id is not None


@dataclass(frozen=True)
class SignedRequest:
    """An ERC-2771 forward request signed by its user (EIP-712), ready for any relayer."""

    sender: str
    to: str
    value: int
    gas: int
    nonce: int
    deadline: int
    data: bytes
    signature: bytes

    def as_execute_arg(self) -> tuple[Any, ...]:
        return (self.sender, self.to, self.value, self.gas, self.deadline, self.data, self.signature)


class RegistryClient:
    """The registry and its forwarder at the addresses of a deployment."""

    def __init__(self, chain: ChainClient, deployment: Deployment) -> None:
        self.chain = chain
        self.deployment = deployment
        self.address = to_checksum_address(deployment.registry)
        self.forwarder_address = to_checksum_address(deployment.forwarder)
        self.abi = ContractAbi(artifact("ReceivableRegistry").abi)
        self.forwarder_abi = ContractAbi(artifact("RegistryForwarder").abi)
        chain.register_abi(self.abi, self.address)
        chain.register_abi(self.forwarder_abi, self.forwarder_address)
        self._register_batch_selector = self.abi.selector("registerBatch")
        self._registered_topic = "0x" + self.abi.event_topics["ReceivableRegistered"].hex()
        self._rejected_topic = "0x" + self.abi.event_topics["RegistrationRejected"].hex()

    # ------------------------------------------------------------------ plumbing

    def call(self, fn: str, *args: Any, block: BlockId = "latest") -> tuple[Any, ...]:
        """Any view function by name, decoded."""
        return self.abi.decode_output(fn, self.chain.call(self.address, self.abi.encode_call(fn, args), block))

    def transact(self, sender: LocalAccount, fn: str, *args: Any, gas: int | None = None) -> TxResult:
        """Any state-changing function by name: simulate (typed revert), sign, send, wait."""
        return self.chain.transact(sender, self.address, self.abi.encode_call(fn, args), gas)

    def send(self, sender: LocalAccount, fn: str, *args: Any, gas: int | None = None) -> PendingTx:
        """As :meth:`transact` without waiting for the receipt."""
        return self.chain.send(sender, self.address, self.abi.encode_call(fn, args), gas)

    # ------------------------------------------------------------------ participants (admin)

    def admit_participant(
        self, admin: LocalAccount, registration_hash: bytes, roles: Sequence[Role], first_key: str
    ) -> EntityId:
        result = self.transact(
            admin, "admitParticipant", registration_hash, [bytes(r) for r in roles], to_checksum_address(first_key)
        )
        return EntityId(result.event("ParticipantAdmitted").args["entityId"])

    def grant_entity_role(self, admin: LocalAccount, entity: EntityId, role: Role) -> TxResult:
        return self.transact(admin, "grantEntityRole", entity, bytes(role))

    def revoke_entity_role(self, admin: LocalAccount, entity: EntityId, role: Role) -> TxResult:
        return self.transact(admin, "revokeEntityRole", entity, bytes(role))

    def suspend_participant(self, admin: LocalAccount, entity: EntityId) -> TxResult:
        return self.transact(admin, "suspendParticipant", entity)

    def reinstate_participant(self, admin: LocalAccount, entity: EntityId) -> TxResult:
        return self.transact(admin, "reinstateParticipant", entity)

    def add_key(self, admin: LocalAccount, entity: EntityId, key: str) -> TxResult:
        return self.transact(admin, "addKey", entity, to_checksum_address(key))

    def revoke_key(self, admin: LocalAccount, key: str) -> TxResult:
        return self.transact(admin, "revokeKey", to_checksum_address(key))

    def grant_role(self, admin: LocalAccount, role: Role, account: str) -> TxResult:
        return self.transact(admin, "grantRole", bytes(role), to_checksum_address(account))

    def revoke_role(self, admin: LocalAccount, role: Role, account: str) -> TxResult:
        return self.transact(admin, "revokeRole", bytes(role), to_checksum_address(account))

    def renounce_role(self, account: LocalAccount, role: Role) -> TxResult:
        return self.transact(account, "renounceRole", bytes(role), account.address)

    def pause(self, admin: LocalAccount) -> TxResult:
        return self.transact(admin, "pause")

    def unpause(self, admin: LocalAccount) -> TxResult:
        return self.transact(admin, "unpause")

    # ------------------------------------------------------------------ participants (reads)

    def entity_of_key(self, key: str, block: BlockId = "latest") -> KeyInfo:
        entity, status, can_act = self.call("entityOfKey", to_checksum_address(key), block=block)
        return KeyInfo(EntityId(entity), KeyStatus(status), bool(can_act))

    def get_entity(self, entity: EntityId, block: BlockId = "latest") -> EntityInfo:
        ((registration_hash, status, active_keys),) = self.call("getEntity", entity, block=block)
        return EntityInfo(entity, registration_hash, EntityStatus(status), active_keys)

    def keys_of(self, entity: EntityId, block: BlockId = "latest") -> list[str]:
        return [to_checksum_address(k) for k in self.call("keysOf", entity, block=block)[0]]

    def entity_has_role(self, entity: EntityId, role: Role, block: BlockId = "latest") -> bool:
        return bool(self.call("entityHasRole", entity, bytes(role), block=block)[0])

    def entity_by_registration_hash(self, registration_hash: bytes, block: BlockId = "latest") -> EntityId:
        return EntityId(self.call("entityByRegistrationHash", registration_hash, block=block)[0])

    def entity_count(self, block: BlockId = "latest") -> int:
        return int(self.call("entityCount", block=block)[0])

    def has_role(self, role: Role, account: str, block: BlockId = "latest") -> bool:
        return bool(self.call("hasRole", bytes(role), to_checksum_address(account), block=block)[0])

    def get_role_admin(self, role: Role) -> Role:
        return Role(self.call("getRoleAdmin", bytes(role))[0])

    def paused(self, block: BlockId = "latest") -> bool:
        return bool(self.call("paused", block=block)[0])

    def supports_interface(self, interface_id: bytes) -> bool:
        return bool(self.call("supportsInterface", interface_id)[0])

    def trusted_forwarder(self) -> str:
        return to_checksum_address(self.call("trustedForwarder")[0])

    def is_trusted_forwarder(self, address: str) -> bool:
        return bool(self.call("isTrustedForwarder", to_checksum_address(address))[0])

    def constant(self, name: str) -> Any:
        """A public constant (CREDITOR_ROLE, MAX_BATCH_SIZE, INVOICE_KEY_TYPEHASH, ...)."""
        return self.call(name)[0]

    # ------------------------------------------------------------------ registration

    def register(self, creditor: LocalAccount, invoice: Invoice) -> ReceivableId:
        result = self.transact(creditor, "register", invoice.as_contract_input())
        return ReceivableId(result.event("ReceivableRegistered").args["id"])

    def register_batch(self, creditor: LocalAccount, invoices: Sequence[Invoice]) -> list[LineOutcome]:
        """One transaction; a refused line does not sink the rest. One outcome per line."""
        return self.register_many(creditor, invoices, batch_size=max(1, len(invoices)))

    def register_many(
        self, creditor: LocalAccount, invoices: Sequence[Invoice], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[LineOutcome]:
        """Registers any number of invoices in batches, all sent before waiting (full blocks).
        Line numbers in the outcomes index ``invoices``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        chunks = [invoices[i : i + batch_size] for i in range(0, len(invoices), batch_size)]
        calls = [
            (
                self.encode_register_batch([inv.as_contract_input() for inv in chunk]),
                BATCH_GAS_BASE + BATCH_GAS_PER_LINE * len(chunk),
            )
            for chunk in chunks
        ]
        pending = self.chain.send_many(creditor, self.address, calls)
        receipts = self.chain.wait_receipts(pending)
        outcomes: list[LineOutcome] = []
        for chunk_no, (chunk, p, receipt) in enumerate(zip(chunks, pending, receipts, strict=True)):
            self.chain.check_receipt(p, receipt)
            outcomes.extend(self._line_outcomes(receipt, chunk_no * batch_size, len(chunk)))
        return outcomes

    def encode_register_batch(self, inputs: Sequence[RegistrationInput]) -> bytes:
        """``registerBatch(inputs)`` calldata, byte for byte what eth-abi encodes, about 30 times faster.

        ``RegistrationInput`` is a static struct (seven words), so the array is its offset, its length
        and the words in order. Every field is range-checked as eth-abi would (AbiError otherwise)."""
        out = [self._register_batch_selector, _word(32), _word(len(inputs))]
        append = out.append
        for line, item in enumerate(inputs):
            try:
                debtor, number_hash, currency, face_value, issue_date, due_date, document_hash = item
                append(_uint(debtor, 24))
                append(_bytes_n(number_hash, 32))
                append(_bytes_n(currency, 3))
                append(_uint(face_value, 64))
                append(_uint(issue_date, 32))
                append(_uint(due_date, 32))
                append(_bytes_n(document_hash, 32))
            except (TypeError, ValueError) as exc:
                raise AbiError(f"registerBatch: line {line} does not fit RegistrationInput: {exc}") from None
        return b"".join(out)

    def _line_outcomes(self, receipt: dict[str, Any], base: int, lines: int) -> list[LineOutcome]:
        """The outcome of every line of one registerBatch, straight from its receipt's logs: ids from
        the indexed topic of ReceivableRegistered (emitted in line order), refusals decoded."""
        registered: list[int] = []
        rejected: dict[int, ContractRevert] = {}
        address = self.address.lower()
        for log in receipt["logs"]:
            if log["address"].lower() != address:
                continue
            topics = log["topics"]
            if topics[0] == self._registered_topic:
                registered.append(int(topics[1], 16))
            elif topics[0] == self._rejected_topic:
                (reason,) = decode(["bytes"], bytes.fromhex(log["data"][2:]))
                rejected[int(topics[2], 16)] = decode_revert(reason)
        if len(registered) + len(rejected) != lines or any(not 0 <= line < lines for line in rejected):
            raise ChainError(
                f"registerBatch {receipt['transactionHash']}: {len(registered)} registered and "
                f"{len(rejected)} rejected lines for {lines} inputs"
            )
        ids = iter(registered)
        return [
            LineOutcome(base + line, None, rejected[line])
            if line in rejected
            else LineOutcome(base + line, ReceivableId(next(ids)), None)
            for line in range(lines)
        ]

    # ------------------------------------------------------------------ debtor

    def confirm(self, debtor: LocalAccount, id: ReceivableId, fingerprint: bytes) -> TxResult:
        return self.transact(debtor, "confirm", id, fingerprint)

    def dispute(self, debtor: LocalAccount, id: ReceivableId, reason: DisputeReason) -> TxResult:
        return self.transact(debtor, "dispute", id, int(reason))

    def resolve_dispute(self, party: LocalAccount, id: ReceivableId, resolution: DisputeResolution) -> TxResult:
        return self.transact(party, "resolveDispute", id, int(resolution))

    def report_payment(
        self, debtor: LocalAccount, id: ReceivableId, paid_to: EntityId, amount: int, payment_ref: bytes = ZERO32
    ) -> int:
        result = self.transact(debtor, "reportPayment", id, paid_to, amount, payment_ref)
        return int(result.event("PaymentReported").args["claimId"])

    # ------------------------------------------------------------------ creditor / holder / payee

    def cancel(self, creditor: LocalAccount, id: ReceivableId) -> TxResult:
        return self.transact(creditor, "cancel", id)

    def assign(
        self,
        holder: LocalAccount,
        id: ReceivableId,
        factor: EntityId,
        advance: int,
        recourse: bool = False,
        terms_hash: bytes = ZERO32,
    ) -> TxResult:
        return self.transact(holder, "assign", id, factor, advance, recourse, terms_hash)

    def split(self, holder: LocalAccount, id: ReceivableId, amounts: Sequence[int]) -> list[ReceivableId]:
        result = self.transact(holder, "split", id, list(amounts))
        return [ReceivableId(p) for p in result.event("ReceivableSplit").args["partIds"]]

    def acknowledge_payment(self, payee: LocalAccount, claim_id: int) -> TxResult:
        return self.transact(payee, "acknowledgePayment", claim_id)

    def reject_payment(self, payee: LocalAccount, claim_id: int) -> TxResult:
        return self.transact(payee, "rejectPayment", claim_id)

    def record_payment(
        self, payee: LocalAccount, id: ReceivableId, amount: int, payment_ref: bytes = ZERO32
    ) -> TxResult:
        return self.transact(payee, "recordPayment", id, amount, payment_ref)

    def buy_back(self, holder: LocalAccount, id: ReceivableId) -> TxResult:
        return self.transact(holder, "buyBack", id)

    def declare_default(self, holder: LocalAccount, id: ReceivableId) -> TxResult:
        return self.transact(holder, "declareDefault", id)

    def write_off(self, holder: LocalAccount, id: ReceivableId) -> TxResult:
        return self.transact(holder, "writeOff", id)

    # ------------------------------------------------------------------ receivable reads

    def get_receivable(self, id: ReceivableId, block: BlockId = "latest") -> ReceivableState:
        return _receivable_state(id, self.call("getReceivable", id, block=block)[0])

    def get_receivables(self, ids: Sequence[int], block: BlockId = "latest") -> list[ReceivableState]:
        """:meth:`get_receivable` of many ids, in JSON-RPC batches of ``eth_call`` (500 a round trip)."""
        tag = hex(block) if isinstance(block, int) else block
        states: list[ReceivableState] = []
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            calls = [
                (
                    "eth_call",
                    [{"to": self.address, "data": "0x" + self.abi.encode_call("getReceivable", (i,)).hex()}, tag],
                )
                for i in chunk
            ]
            for rid, answer in zip(chunk, self.chain.rpc.batch(calls), strict=True):
                if isinstance(answer, Exception):
                    raise answer
                (values,) = self.abi.decode_output("getReceivable", bytes.fromhex(answer[2:]))
                states.append(_receivable_state(rid, values))
        return states

    def parent_of(self, id: ReceivableId, block: BlockId = "latest") -> ReceivableId:
        return ReceivableId(self.call("parentOf", id, block=block)[0])

    def receivable_id_by_invoice_key(self, key: bytes, block: BlockId = "latest") -> ReceivableId:
        return ReceivableId(self.call("receivableIdByInvoiceKey", key, block=block)[0])

    def receivable_id_by_fingerprint(self, fingerprint: bytes, block: BlockId = "latest") -> ReceivableId:
        return ReceivableId(self.call("receivableIdByFingerprint", fingerprint, block=block)[0])

    def payee_of_record(self, id: ReceivableId, block: BlockId = "latest") -> EntityId:
        return EntityId(self.call("payeeOfRecord", id, block=block)[0])

    def get_payment_claim(self, claim_id: int, block: BlockId = "latest") -> PaymentClaim:
        ((receivable_id, payee, status, amount),) = self.call("getPaymentClaim", claim_id, block=block)
        return PaymentClaim(claim_id, ReceivableId(receivable_id), EntityId(payee), ClaimStatus(status), amount)

    def receivable_count(self, block: BlockId = "latest") -> int:
        return int(self.call("receivableCount", block=block)[0])

    def ledger(self, block: BlockId = "latest") -> tuple[bytes, int]:
        head, count = self.call("ledger", block=block)
        return head, int(count)

    def invoice_key_of(self, debtor: EntityId, number_hash: bytes) -> bytes:
        return bytes(self.call("invoiceKeyOf", debtor, number_hash)[0])

    def fingerprint_of(self, invoice: Invoice) -> bytes:
        return bytes(self.call("fingerprintOf", invoice.as_contract_input())[0])

    # ------------------------------------------------------------------ signed requests (ERC-2771)

    def forwarder_nonce(self, signer: str) -> int:
        data = self.forwarder_abi.encode_call("nonces", (to_checksum_address(signer),))
        return int(self.forwarder_abi.decode_output("nonces", self.chain.call(self.forwarder_address, data))[0])

    def forwarder_domain(self) -> dict[str, Any]:
        return {
            "name": "ReceivablesRegistryForwarder",
            "version": "1",
            "chainId": self.chain.chain_id,
            "verifyingContract": self.forwarder_address,
        }

    def sign_request(
        self,
        signer: LocalAccount,
        fn: str,
        *args: Any,
        deadline: int | None = None,
        gas: int | None = None,
        nonce: int | None = None,
        ttl: int = 600,
    ) -> SignedRequest:
        """The user signs a call to the registry for a relayer to submit (EIP-712, locally).
        The call is simulated first, so a would-be revert raises before anything is signed."""
        data = self.abi.encode_call(fn, args)
        if gas is None:
            gas = self.chain.estimate_gas(signer.address, self.address, data) + 20_000
        if nonce is None:
            nonce = self.forwarder_nonce(signer.address)
        if deadline is None:
            deadline = int(time.time()) + ttl
        message = {
            "from": signer.address,
            "to": self.address,
            "value": 0,
            "gas": gas,
            "nonce": nonce,
            "deadline": deadline,
            "data": data,
        }
        signable = encode_typed_data(
            domain_data=self.forwarder_domain(),
            message_types={"ForwardRequest": FORWARD_REQUEST_TYPES},
            message_data=message,
        )
        signature = bytes(signer.sign_message(signable).signature)
        return SignedRequest(signer.address, self.address, 0, gas, nonce, deadline, data, signature)

    def verify_request(self, request: SignedRequest) -> bool:
        data = self.forwarder_abi.encode_call("verify", (request.as_execute_arg(),))
        return bool(self.forwarder_abi.decode_output("verify", self.chain.call(self.forwarder_address, data))[0])

    def relay(self, relayer: LocalAccount, request: SignedRequest) -> TxResult:
        """Submits a user's signed request; the relayer pays gas and can change nothing in it."""
        data = self.forwarder_abi.encode_call("execute", (request.as_execute_arg(),))
        return self.chain.transact(relayer, self.forwarder_address, data)


# The EIP-712 type of OpenZeppelin's ERC2771Forwarder request (without the signature).
FORWARD_REQUEST_TYPES: list[dict[str, str]] = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "gas", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint48"},
    {"name": "data", "type": "bytes"},
]


def _receivable_state(id: int, values: Sequence[Any]) -> ReceivableState:
    """``getReceivable``'s tuple as a :class:`ReceivableState`."""
    creditor, debtor, holder, status, recourse, due, face, paid = values
    return ReceivableState(
        id=ReceivableId(id),
        creditor=EntityId(creditor),
        debtor=EntityId(debtor),
        holder=EntityId(holder),
        status=Status(status),
        recourse=bool(recourse),
        due_date=UnixTime(due),
        face_value=MinorUnits(face),
        paid=MinorUnits(paid),
    )


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _uint(value: int, bits: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{value!r} is not a uint{bits}")
    return value.to_bytes(32, "big")


def _bytes_n(value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) > size:
        raise ValueError(f"{value!r} is not bytes{size}")
    return bytes(value).ljust(32, b"\0")
