"""Request and response bodies, named by direction (``...Create`` in, ``...Public`` out)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

HEX = r"^0x[0-9a-fA-F]*$"
HEX32 = r"^0x[0-9a-fA-F]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemPublic(BaseModel):
    """An error as RFC 9457 problem+json (``application/problem+json``), with a stable machine ``code``."""

    type: str
    title: str
    status: int
    code: str = Field(description="stable machine code, e.g. validation_error, contract.InvoiceKeyTaken")
    detail: str
    instance: str
    request_id: str | None
    errors: list[dict[str, Any]] | None = Field(default=None, description="validation errors, by field")
    error: str | None = Field(default=None, description="contract errors: the Solidity error's name")
    fields: dict[str, Any] | None = Field(default=None, description="contract errors: the error's fields")


class AsOf(BaseModel):
    """Which block an answer is as of, and how stale the mirror is."""

    block: int
    block_hash: str
    block_timestamp: int
    staleness_seconds: float


# ---------------------------------------------------------------------------------------- auth


class ChallengeCreate(Strict):
    address: str = Field(pattern=ADDRESS, description="the EIP-55 address that will sign")


class ChallengePublic(BaseModel):
    nonce: str
    message: str = Field(description="the exact EIP-4361 text to sign with personal_sign")
    expires_at: float


class SessionCreate(Strict):
    message: str = Field(max_length=4000)
    signature: str = Field(pattern=r"^0x(?:[0-9a-fA-F]{2})+$", max_length=200)


class PrincipalPublic(BaseModel):
    address: str
    entity: int | None
    roles: list[str]
    is_admin: bool


class SessionPublic(BaseModel):
    token: str
    token_type: str = "Bearer"
    expires_in: int
    principal: PrincipalPublic


# ---------------------------------------------------------------------------------------- receivables


class ReceivablePublic(BaseModel):
    id: int
    status: str
    creditor: int
    debtor: int
    holder: int
    recourse: bool
    face_value: int = Field(description="minor units of the currency")
    paid: int
    unpaid: int
    currency: str
    issue_date: int
    due_date: int
    fingerprint: str | None
    invoice_key: str | None
    document_hash: str | None
    parent_id: int | None
    supersedes: int | None
    registered_block: int
    valid_from_block: int
    valid_to_block: int | None


class ReceivablePage(BaseModel):
    items: list[ReceivablePublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")
    as_of: AsOf


class AssignmentPublic(BaseModel):
    block: int
    from_entity: int
    to_entity: int
    advance: int | None = Field(description="null unless the caller is a party to this assignment")
    recourse: bool
    terms_hash: str | None


class PaymentPublic(BaseModel):
    block: int
    payee: int
    amount: int
    paid_total: int
    claim_id: int


class ReceivableDetail(BaseModel):
    receivable: ReceivablePublic
    versions: list[ReceivablePublic]
    assignments: list[AssignmentPublic]
    payments: list[PaymentPublic]
    parent_id: int | None
    parts: list[int]
    as_of: AsOf


class PayeePublic(BaseModel):
    receivable_id: int
    payee_of_record: int
    because: str
    chain: list[AssignmentPublic]
    as_of: AsOf


class PriorityClaim(BaseModel):
    rank: int
    receivable_id: int
    status: str
    registered_block: int
    live: bool
    reason: str


class PriorityPublic(BaseModel):
    invoice_key: str
    claims: list[PriorityClaim]
    explanation: str
    as_of: AsOf


# ---------------------------------------------------------------------------------------- checks


class InvoiceFields(Strict):
    debtor: StrictInt = Field(gt=0, lt=2**24)
    invoice_number: StrictStr = Field(min_length=1, max_length=200)
    face_value: StrictStr = Field(min_length=1, max_length=64, description="in major units, e.g. '1,850,600.00'")
    currency: StrictStr = Field(min_length=3, max_length=3)
    issue_date: StrictStr = Field(min_length=8, max_length=32, description="YYYY-MM-DD")
    due_date: StrictStr = Field(min_length=8, max_length=32)
    document_hash: str | None = Field(default=None, pattern=HEX32)


class CheckCreate(Strict):
    invoice: InvoiceFields | None = None
    invoice_key: str | None = Field(default=None, pattern=HEX32)
    fingerprint: str | None = Field(default=None, pattern=HEX32)


class BulkCheckCreate(Strict):
    invoices: list[InvoiceFields] = Field(min_length=1, max_length=10_000)


class NearDuplicatePublic(BaseModel):
    reason: str
    risk: str
    receivable_id: int | None
    batch_line: int | None


class CheckPublic(BaseModel):
    registered: bool
    status: str
    financed: bool
    receivable_id: int | None
    match: str | None
    parties: dict[str, Any] | None
    near_duplicates: list[NearDuplicatePublic]
    duplicate_of_line: int | None = None
    error: dict[str, Any] | None = Field(default=None, description="bulk: why this line could not be checked")
    as_of: AsOf


class BulkCheckPublic(BaseModel):
    results: list[CheckPublic]
    duplicates: int
    suspicious: int
    as_of: AsOf | None


# ---------------------------------------------------------------------------------------- writes


class SignedRequestCreate(Strict):
    """An ERC-2771 ForwardRequest signed by its user (EIP-712), as JSON."""

    from_: str = Field(alias="from", pattern=ADDRESS)
    to: str = Field(pattern=ADDRESS)
    value: StrictInt = Field(ge=0)
    gas: StrictInt = Field(gt=0, lt=2**64)
    nonce: StrictInt = Field(ge=0, lt=2**64)
    deadline: StrictInt = Field(ge=0, lt=2**48)
    data: str = Field(pattern=HEX, max_length=2_000_000)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.from_,
            "to": self.to,
            "value": self.value,
            "gas": self.gas,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "data": self.data,
            "signature": self.signature,
        }


class EventPublic(BaseModel):
    name: str
    args: dict[str, Any]
    log_index: int


class RelayPublic(BaseModel):
    function: str
    digest: str
    tx_hash: str
    block: int | None
    duplicate: bool = Field(description="true when this exact request had been relayed before")
    indexed: bool
    events: list[EventPublic]
    line_outcomes: list[dict[str, Any]] | None = None
    receivables: list[ReceivablePublic] = Field(default_factory=list)


class HealthPublic(BaseModel):
    status: str
    chain_block: int | None
    indexed_block: int | None
    lag_blocks: int | None
    as_of: AsOf | None


# ---------------------------------------------------------------------------------------- reports


class CertificateCreate(Strict):
    """Exactly one of ``invoice_key`` and ``fingerprint``."""

    invoice_key: str | None = Field(default=None, pattern=HEX32)
    fingerprint: str | None = Field(default=None, pattern=HEX32)


class CertificateParties(BaseModel):
    creditor: int
    debtor: int
    holder: int


class CertificateRegistration(BaseModel):
    id: int
    status: str
    live: bool = Field(description="false for a cancelled registration (it no longer holds the invoice)")
    registered_block: int
    financed: bool
    assignments: int = Field(description="assignments registered as of the certificate's block")
    parts: list[int] = Field(description="split parts (any depth) of a split registration")
    supersedes: int | None
    parties: CertificateParties | None = Field(description="only when the requester may read the registration")


class CertificateQueryPublic(BaseModel):
    invoice_key: str | None
    fingerprint: str | None


class CertificateAsOf(BaseModel):
    block: int
    block_hash: str
    block_timestamp: int
    ledger_head: str = Field(description="the contract's ledger hash after the events up to this block")
    ledger_count: int


class CertificateChain(BaseModel):
    chain_id: int
    registry: str


class CertificateIssuedTo(BaseModel):
    address: str
    entity: int | None


class CertificateBody(BaseModel):
    type: str
    version: int
    query: CertificateQueryPublic
    statement: str
    registered: bool
    financed: bool
    registrations: list[CertificateRegistration]
    as_of: CertificateAsOf
    chain: CertificateChain
    issued_to: CertificateIssuedTo
    issued_at: int
    issuer: str


class CertificatePublic(BaseModel):
    """A search certificate: ``signature`` is EIP-191 personal_sign by ``certificate.issuer`` over
    ``digest`` = keccak256 of the canonical JSON of ``certificate`` (sorted keys, no whitespace).
    Verify offline with ``registry audit certificate verify FILE --issuer ADDRESS``."""

    certificate: CertificateBody
    digest: str
    signature: str


class AgeingBucketPublic(BaseModel):
    currency: str
    bucket: str = Field(description="current, 1-30, 31-60, 61-90 or >90 days overdue")
    count: int
    unpaid: int = Field(description="minor units of the currency")


class AgeingPublic(BaseModel):
    at: int = Field(description="the unix time ageing is measured at: the as-of block's timestamp")
    buckets: list[AgeingBucketPublic]
    as_of: AsOf


class ExposurePublicRow(BaseModel):
    entity: int
    currency: str
    count: int
    unpaid: int = Field(description="minor units of the currency")


class ExposurePublic(BaseModel):
    by_debtor: list[ExposurePublicRow] = Field(description="unpaid of open receivables owed by each debtor")
    by_factor: list[ExposurePublicRow] = Field(description="unpaid of open receivables held by each factor")
    as_of: AsOf


class VolumePeriodPublic(BaseModel):
    start: str = Field(description="the period's first day, YYYY-MM-DD (UTC)")
    start_timestamp: int
    first_block: int = Field(description="the period's first block (beyond the as-of block: none yet)")
    counts: dict[str, int] = Field(description="transitions into each status during the period")
    total: int


class VolumesPublic(BaseModel):
    period: str
    periods: list[VolumePeriodPublic]
    as_of: AsOf


# ---------------------------------------------------------------------------------------- signed writes


class PrepareCreate(Strict):
    """An action's named arguments (see ``registry/actions.py``), e.g. ``{"id": 5, "invoice": {...}}``."""

    args: dict[str, Any] = Field(default_factory=dict)


class TypedDataPublic(BaseModel):
    """An EIP-712 typed-data document (as ``eth_signTypedData_v4`` takes it)."""

    domain: dict[str, Any]
    types: dict[str, list[dict[str, str]]]
    primaryType: str  # the EIP-712 JSON name
    message: dict[str, Any]


class PreparePublic(BaseModel):
    """What to sign: post ``typed_data.message`` plus your ``signature`` to ``/actions/{action}``."""

    action: str
    function: str
    summary: dict[str, Any]
    typed_data: TypedDataPublic


class MetaPublic(BaseModel):
    """Where the registry lives and how requests to it are signed (public)."""

    chain_id: int
    registry: str
    forwarder: str
    deploy_block: int
    eip712: dict[str, Any]
    actions: dict[str, str]
    certificate_issuer: str
    registry_abi: list[dict[str, Any]]
