"""Request and response bodies, named by direction (``...Create`` in, ``...Public`` out)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

HEX = r"^0x[0-9a-fA-F]*$"
HEX32 = r"^0x[0-9a-fA-F]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    signature: str = Field(pattern=HEX, max_length=200)


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
