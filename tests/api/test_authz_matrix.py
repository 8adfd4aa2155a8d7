"""Who may read and do what through the API: a principal x object x endpoint matrix generated from tables.

Principals (``KINDS``) are the demo roles relative to the objects: the creditor and debtor of record,
their competitors, the factor that holds (or held) the receivables, the other factor, the auditor, the
consortium admin, a stranger who cannot sign in, a signed-in key whose entity the admin then suspended,
and a signed-in second key of the creditor of record that the admin then revoked.

Objects (``SHAPES``) are receivables of the creditor of record against the debtor of record, walked
into a state (registered, confirmed, disputed, cancelled, split, assigned, reassigned, settled, bought
back), each with its invoice key and fingerprint, plus an unknown id and an unknown invoice key.

The expected answer of every cell comes from a small specification (``reads``, ``sees_terms``,
``sees_parties``): an auditor reads everything, a party reads what it is party to (a factor what it
holds or held), nobody else reads anything, and "not yours" looks exactly like "does not exist".

Writes (``ACTIONS``): every ``/actions/<action>`` endpoint with the state it needs, who is entitled,
and how the contract refuses everyone else. A request is refused by the API when it is signed by
someone other than the signed-in principal (403 ``forbidden``), and by the contract's simulation when
its signer is not entitled (403 ``contract.<Error>``); in neither case is anything submitted.

The world is built once per module on a chain snapshot (reverted afterwards) with its own mirror,
live indexer and API; every write cell brings about its own fresh state.
"""

from __future__ import annotations

import datetime
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import build_services, create_app
from api.deps import Services
from api.routes.core import ACTIONS as ACTION_FUNCTIONS
from registry.chain.contract import ZERO32, RegistryClient, SignedRequest
from registry.demo import DAY, STRANGER_INDEX, Consortium
from registry.domain import DisputeReason, DisputeResolution, Role
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.invoice import Invoice
from registry.keys import anvil_account
from registry.settings import Settings
from registry.store.db import make_engine
from registry.store.models import RelayedRequest, table_of
from registry.types import EntityId, ReceivableId
from tests.conftest import ChainState

# ---------------------------------------------------------------------------------------- principals

PARTY_KINDS = ("creditor", "other_creditor", "debtor", "other_debtor", "factor", "other_factor", "auditor")
SIGNED_IN_KINDS = (*PARTY_KINDS, "admin")
# Refused before anything else, whatever they ask: (status, code).
AT_THE_DOOR = {
    "stranger": (401, "auth.missing_token"),
    "suspended": (401, "auth.entity_suspended"),
    "revoked": (401, "auth.key_revoked"),
}
KINDS = (*SIGNED_IN_KINDS, *AT_THE_DOOR)

# ---------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Shape:
    """A receivable of the creditor of record against the debtor of record, in one state."""

    name: str
    status: str
    holder: str  # the principal kind holding it now
    assignments: tuple[tuple[str, str], ...] = ()  # (from kind, to kind), oldest first


SHAPES: tuple[Shape, ...] = (
    Shape("registered", "registered", "creditor"),
    Shape("confirmed", "confirmed", "creditor"),
    Shape("disputed", "disputed", "creditor"),
    Shape("cancelled", "cancelled", "creditor"),
    Shape("split", "split", "creditor"),
    Shape("assigned", "assigned", "factor", (("creditor", "factor"),)),
    Shape("assigned_to_other_factor", "assigned", "other_factor", (("creditor", "other_factor"),)),
    Shape("reassigned", "assigned", "factor", (("creditor", "other_factor"), ("other_factor", "factor"))),
    Shape("settled", "settled", "factor", (("creditor", "factor"),)),
    Shape("bought_back", "confirmed", "creditor", (("creditor", "factor"),)),
)


def reads(kind: str, shape: Shape) -> bool:
    """The specification of object-level authorisation for reads."""
    if kind == "auditor":
        return True
    return kind in {"creditor", "debtor", shape.holder} | {to for _, to in shape.assignments}


def sees_terms(kind: str, assignment: tuple[str, str]) -> bool:
    """The advance and the terms of an assignment: its two sides and the auditor."""
    return kind == "auditor" or kind in assignment


def sees_parties(kind: str, shape: Shape) -> bool:
    """A duplicate check names the parties and amounts only to the creditor, debtor or current holder
    of a live registration (registry/checks.py, "Privacy"); everyone else gets yes/no and the status.
    The auditor is not named there: it reads the receivable itself instead."""
    return shape.status != "cancelled" and kind in {"creditor", "debtor", shape.holder}


@dataclass
class Obj:
    shape: Shape
    id: ReceivableId
    invoice: Invoice
    fields: dict[str, Any]
    registered_block: int


# ---------------------------------------------------------------------------------------- the world


def request_body(request: SignedRequest) -> dict[str, Any]:
    return {
        "from": request.sender,
        "to": request.to,
        "value": request.value,
        "gas": request.gas,
        "nonce": request.nonce,
        "deadline": request.deadline,
        "data": "0x" + request.data.hex(),
        "signature": "0x" + request.signature.hex(),
    }


def _day(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).date().isoformat()


_serial = itertools.count(1)


@dataclass
class World:
    registry: RegistryClient
    consortium: Consortium
    chain_state: ChainState
    api: TestClient
    services: Services
    accounts: dict[str, LocalAccount] = field(default_factory=dict)
    entities: dict[str, EntityId] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    objects: dict[str, Obj] = field(default_factory=dict)

    @property
    def admin(self) -> LocalAccount:
        return self.consortium.admin

    def entity(self, kind: str) -> EntityId:
        return self.entities[kind]

    def account(self, kind: str) -> LocalAccount:
        return self.accounts[kind]

    # ------------------------------------------------------------------ plumbing

    def wait_indexed(self, block: int | None = None) -> None:
        target = self.registry.chain.block_number() if block is None else block
        assert self.services.relayer.wait_indexed(target, 20), f"the mirror did not reach block {target}"

    def sign_in(self, account: LocalAccount) -> dict[str, str]:
        challenge = self.api.post("/auth/challenge", json={"address": account.address}).json()
        signature = bytes(account.sign_message(encode_defunct(text=challenge["message"])).signature)
        answer = self.api.post(
            "/auth/session", json={"message": challenge["message"], "signature": "0x" + signature.hex()}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def sign(self, signer: LocalAccount, fn: str, *args: Any, entitled: bool = True) -> SignedRequest:
        """``signer``'s request; a non-entitled one cannot be estimated, so it names its gas."""
        deadline = max(int(time.time()), self.chain_state.now()) + 600
        return self.registry.sign_request(signer, fn, *args, deadline=deadline, gas=None if entitled else 1_000_000)

    def relayed_count(self) -> int:
        with self.services.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table_of(RelayedRequest))).scalar_one())

    # ------------------------------------------------------------------ receivables

    def invoice(self, due_in_days: int = 60, amount: str = "120,000.00") -> tuple[Invoice, dict[str, Any]]:
        now = self.chain_state.now()
        fields: dict[str, Any] = {
            "debtor": self.entity("debtor"),
            "invoice_number": f"AZ-{next(_serial):05d}-{uuid.uuid4().hex[:8]}",
            "face_value": amount,
            "currency": "CNY",
            "issue_date": _day(now - 10 * DAY),
            "due_date": _day(now + due_in_days * DAY),
        }
        return Invoice.parse(**fields), fields

    def registered(self, due_in_days: int = 60) -> tuple[ReceivableId, Invoice]:
        invoice, _ = self.invoice(due_in_days)
        return self.registry.register(self.account("creditor"), invoice), invoice

    def confirmed(self, due_in_days: int = 60) -> tuple[ReceivableId, Invoice]:
        rid, invoice = self.registered(due_in_days)
        self.registry.confirm(self.account("debtor"), rid, invoice.fingerprint)
        return rid, invoice

    def disputed(self) -> ReceivableId:
        rid, _ = self.registered()
        self.registry.dispute(self.account("debtor"), rid, DisputeReason.QUALITY_DEFECT)
        return rid

    def assigned(self, *, recourse: bool = False, due_in_days: int = 60) -> tuple[ReceivableId, Invoice]:
        rid, invoice = self.confirmed(due_in_days)
        advance = invoice.face_value * 9 // 10
        self.registry.assign(self.account("creditor"), rid, self.entity("factor"), advance, recourse, keccak(text="t"))
        return rid, invoice

    def overdue(self) -> ReceivableId:
        rid, _ = self.assigned(due_in_days=1)
        self.chain_state.advance(2 * DAY)
        return rid

    def defaulted(self) -> ReceivableId:
        rid = self.overdue()
        self.registry.declare_default(self.account("factor"), rid)
        return rid

    def claim(self) -> int:
        rid, invoice = self.assigned()
        return self.registry.report_payment(self.account("debtor"), rid, self.entity("factor"), invoice.face_value // 4)

    def throwaway_participant(self) -> EntityId:
        """A freshly admitted factor, for admin actions that must not disturb the demo members."""
        return self.registry.admit_participant(
            self.admin, keccak(text=uuid.uuid4().hex), [Role.FACTOR], Account.create().address
        )

    def build(self, shape: Shape) -> Obj:
        invoice, fields = self.invoice()
        c, f = self.account("creditor"), self.account("factor")
        result = self.registry.transact(c, "register", invoice.as_contract_input())
        rid = ReceivableId(result.event("ReceivableRegistered").args["id"])
        advance = invoice.face_value * 9 // 10
        terms = keccak(text=f"terms of {shape.name}")
        if shape.name == "disputed":
            self.registry.dispute(self.account("debtor"), rid, DisputeReason.AMOUNT_INCORRECT)
        elif shape.name == "cancelled":
            self.registry.cancel(c, rid)
        elif shape.name != "registered":
            self.registry.confirm(self.account("debtor"), rid, invoice.fingerprint)
        if shape.name == "split":
            self.registry.split(c, rid, [invoice.face_value // 2, invoice.face_value - invoice.face_value // 2])
        for frm, to in shape.assignments:
            recourse = shape.name == "bought_back"
            self.registry.assign(self.account(frm), rid, self.entity(to), advance, recourse, terms)
        if shape.name == "settled":
            self.registry.record_payment(f, rid, invoice.face_value)
        if shape.name == "bought_back":
            self.registry.buy_back(f, rid)
        return Obj(shape, rid, invoice, fields, result.block_number)

    # ------------------------------------------------------------------ principals

    def populate(self) -> None:
        c = self.consortium
        members = {
            "creditor": c.creditors[0],
            "other_creditor": c.creditors[1],
            "debtor": c.debtors[0],
            "other_debtor": c.debtors[1],
            "factor": c.factors[0],
            "other_factor": c.factors[1],
            "auditor": c.auditors[0],
        }
        for kind, member in members.items():
            self.accounts[kind] = member.account
            self.entities[kind] = member.entity
        self.accounts["admin"] = c.admin
        self.accounts["stranger"] = anvil_account(STRANGER_INDEX)
        # A key of its own entity, signed in, then the entity suspended by the admin.
        suspended: LocalAccount = Account.create()
        self.accounts["suspended"] = suspended
        self.entities["suspended"] = self.registry.admit_participant(
            self.admin, keccak(text=f"suspended {uuid.uuid4().hex}"), [Role.CREDITOR], suspended.address
        )
        # A second key of the creditor of record, signed in, then revoked by the admin.
        revoked: LocalAccount = Account.create()
        self.accounts["revoked"] = revoked
        self.entities["revoked"] = self.entity("creditor")
        self.registry.add_key(self.admin, self.entity("creditor"), revoked.address)
        for shape in SHAPES:
            self.objects[shape.name] = self.build(shape)
        self.wait_indexed()
        for kind in (*SIGNED_IN_KINDS, "suspended", "revoked"):
            self.headers[kind] = self.sign_in(self.account(kind))
        self.headers["stranger"] = {}
        # Both could read before the admin acted; the refusal afterwards is the admin's doing.
        assert self.api.get("/auth/me", headers=self.headers["suspended"]).status_code == 200
        assert self.api.get(f"/receivables/{self.objects['registered'].id}", headers=self.headers["revoked"]).json()[
            "receivable"
        ]["creditor"] == self.entity("creditor")
        self.registry.suspend_participant(self.admin, self.entity("suspended"))
        self.registry.revoke_key(self.admin, revoked.address)
        self.wait_indexed()


@contextmanager
def running_api(
    registry: RegistryClient, directory: Path, database_url: str | None = None, **overrides: Any
) -> Iterator[tuple[TestClient, Services]]:
    """An API over ``registry`` with its own mirror (SQLite under ``directory`` unless ``database_url``)
    kept current by a live indexer, as the ``api`` fixture of tests/api/conftest.py builds it, for
    fixtures of a wider scope or another database. Rate limiting is off unless overridden."""
    deployment_file = directory / "deployment.json"
    registry.deployment.save(deployment_file)
    settings = Settings(
        **{
            "data_dir": directory,
            "rpc_url": registry.chain.url,
            "deployment_file": deployment_file,
            "database_url": database_url or f"sqlite:///{directory / 'mirror.db'}",
            "public_url": "http://testserver",
            "session_secret": "test-secret",
            "poll_interval": 0.02,
            "rate_limit_per_minute": 1_000_000,
            **overrides,
        }
    )
    engine = make_engine(settings.database)
    indexer = Indexer(registry.chain, registry.deployment, engine, IndexerConfig(poll_interval=0.02))
    indexer.start()
    indexer.sync()
    thread = threading.Thread(target=indexer.run, daemon=True)
    thread.start()
    services = build_services(settings)
    try:
        with TestClient(create_app(settings, services)) as client:
            yield client, services
    finally:
        indexer.stop()
        thread.join(10)
        indexer.close()
        engine.dispose()
        services.engine.dispose()


@contextmanager
def chain_snapshot(chain_state: ChainState) -> Iterator[None]:
    """Everything done on the chain inside is undone afterwards."""
    snapshot = chain_state.snapshot()
    try:
        yield
    finally:
        chain_state.revert(snapshot)


@pytest.fixture(scope="module")
def world(
    _base_registry: tuple[RegistryClient, Consortium], chain_state: ChainState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    registry, consortium = _base_registry
    with chain_snapshot(chain_state), running_api(registry, tmp_path_factory.mktemp("authz")) as (client, services):
        built = World(registry, consortium, chain_state, client, services)
        built.populate()
        yield built


# ---------------------------------------------------------------------------------------- reads by id / key


@dataclass(frozen=True)
class Read:
    route: str  # the router's path, for the coverage test
    url: Callable[[Obj], str]


READS: tuple[Read, ...] = (
    Read("/receivables/{receivable_id}", lambda o: f"/receivables/{o.id}"),
    Read("/receivables/{receivable_id}?block", lambda o: f"/receivables/{o.id}?block={o.registered_block}"),
    Read("/receivables/{receivable_id}/payee", lambda o: f"/receivables/{o.id}/payee"),
    Read("/priority/{invoice_key}", lambda o: f"/priority/0x{o.invoice.key.hex()}"),
    # Offers are not receivables: tests/api/test_offers.py holds their principal x offer matrix.
    Read("/offers/{offer_id}", lambda o: f"/offers/{o.id}"),
    Read("/offers/{offer_id}/accept", lambda o: f"/offers/{o.id}/accept"),
    Read("/offers/{offer_id}/decline", lambda o: f"/offers/{o.id}/decline"),
)
UNKNOWN_ID = 10**9
UNKNOWN_KEY = "0x" + keccak(text="an invoice nobody registered").hex()


def _refused_at_the_door(answer: Any, kind: str) -> None:
    status, code = AT_THE_DOOR[kind]
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def _assert_not_found_and_nothing_leaks(answer: Any, obj: Obj | None = None) -> None:
    assert answer.status_code == 404, answer.text
    body = answer.json()
    assert body["code"] == "not_found"
    assert set(body) <= {"type", "title", "status", "code", "detail", "instance", "request_id"}
    if obj is not None:
        assert str(obj.invoice.face_value) not in answer.text


def _assert_terms(kind: str, shape: Shape, chain: list[dict[str, Any]]) -> None:
    assert len(chain) == len(shape.assignments)
    for entry, assignment in zip(chain, shape.assignments, strict=True):
        if sees_terms(kind, assignment):
            assert entry["advance"] is not None and entry["terms_hash"] is not None, (kind, assignment, entry)
        else:
            assert entry["advance"] is None and entry["terms_hash"] is None, (kind, assignment, entry)


READ_CELLS = [
    pytest.param(read, shape, kind, id=f"{read.route}-{shape.name}-{kind}")
    for read in READS
    if not read.route.startswith("/offers/")
    for shape in SHAPES
    for kind in KINDS
]


@pytest.mark.parametrize(("read", "shape", "kind"), READ_CELLS)
def test_a_read_by_id_or_key_answers_parties_and_not_found_for_everyone_else(
    world: World, read: Read, shape: Shape, kind: str
) -> None:
    obj = world.objects[shape.name]
    answer = world.api.get(read.url(obj), headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
        return
    if not reads(kind, shape):
        _assert_not_found_and_nothing_leaks(answer, obj)
        return
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if read.route == "/receivables/{receivable_id}":
        assert body["receivable"]["id"] == obj.id and body["receivable"]["status"] == shape.status
        assert body["receivable"]["face_value"] == obj.invoice.face_value
        _assert_terms(kind, shape, body["assignments"])
    elif read.route == "/receivables/{receivable_id}?block":
        assert body["receivable"]["status"] == "registered" and body["assignments"] == []
    elif read.route == "/receivables/{receivable_id}/payee":
        assert body["payee_of_record"] == world.entity(shape.holder)
        _assert_terms(kind, shape, body["chain"])
    else:
        assert obj.id in {c["receivable_id"] for c in body["claims"]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "url", [f"/receivables/{UNKNOWN_ID}", f"/receivables/{UNKNOWN_ID}/payee", f"/priority/{UNKNOWN_KEY}"]
)
def test_an_unknown_id_or_key_looks_exactly_like_someone_elses(world: World, url: str, kind: str) -> None:
    answer = world.api.get(url, headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
    else:
        _assert_not_found_and_nothing_leaks(answer)


# ---------------------------------------------------------------------------------------- the list and its filters


@dataclass(frozen=True)
class Filter:
    name: str
    params: Callable[[World], dict[str, Any]]
    matches: Callable[[Shape], bool]


def _status_params(status: str, w: World) -> dict[str, Any]:
    return {"status": status}


def _status_is(status: str, shape: Shape) -> bool:
    return shape.status == status


def _holder_params(kind: str, w: World) -> dict[str, Any]:
    return {"holder": w.entity(kind)}


def _held_by(kind: str, shape: Shape) -> bool:
    return shape.holder == kind


FILTERS: tuple[Filter, ...] = (
    Filter("none", lambda w: {}, lambda s: True),
    *(
        Filter(f"status={status}", partial(_status_params, status), partial(_status_is, status))
        for status in sorted({s.status for s in SHAPES})
    ),
    Filter("creditor", lambda w: {"creditor": w.entity("creditor")}, lambda s: True),
    Filter("debtor", lambda w: {"debtor": w.entity("debtor")}, lambda s: True),
    Filter("other_debtor", lambda w: {"debtor": w.entity("other_debtor")}, lambda s: False),
    *(
        Filter(f"holder={kind}", partial(_holder_params, kind), partial(_held_by, kind))
        for kind in ("creditor", "factor", "other_factor")
    ),
    Filter("currency", lambda w: {"currency": "CNY"}, lambda s: True),
    Filter("due_window", lambda w: {"due_from": 0, "due_to": 2**32 - 1}, lambda s: True),
)


def _pages(w: World, kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, "limit": 3, **({"cursor": cursor} if cursor else {})}
        answer = w.api.get("/receivables", params=query, headers=w.headers[kind])
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: f.name)
def test_the_list_shows_a_principal_exactly_what_it_is_party_to(world: World, flt: Filter, kind: str) -> None:
    params = flt.params(world)
    if kind in AT_THE_DOOR:
        _refused_at_the_door(world.api.get("/receivables", params=params, headers=world.headers[kind]), kind)
        return
    items = _pages(world, kind, params)
    ids = [item["id"] for item in items]
    assert ids == sorted(set(ids)), "pages overlap or are out of order"
    ours = {o.id: o for o in world.objects.values()}
    expected = {o.id for o in ours.values() if reads(kind, o.shape) and flt.matches(o.shape)}
    assert set(ids) & set(ours) == expected
    # Whatever else the chain holds (other tests' receivables), the principal is a party to it.
    entity = world.entities.get(kind)
    for item in items:
        if kind == "auditor" or item["id"] in ours:
            continue
        detail = world.api.get(f"/receivables/{item['id']}", headers=world.headers["auditor"]).json()
        held = {a["to_entity"] for a in detail["assignments"]}
        assert entity in {item["creditor"], item["debtor"], item["holder"]} | held, item


def test_a_factors_list_holds_only_what_it_holds_or_held(world: World) -> None:
    factor = world.entity("factor")
    items = _pages(world, "factor", {})
    assert items, "the factor holds receivables in this world"
    for item in items:
        detail = world.api.get(f"/receivables/{item['id']}", headers=world.headers["auditor"]).json()
        assert item["holder"] == factor or factor in {a["to_entity"] for a in detail["assignments"]}, item


# ---------------------------------------------------------------------------------------- duplicate checks

CHECK_WAYS = ("invoice", "invoice_key", "fingerprint")


def _check_body(obj: Obj, way: str) -> dict[str, Any]:
    if way == "invoice":
        return {"invoice": obj.fields}
    if way == "invoice_key":
        return {"invoice_key": "0x" + obj.invoice.key.hex()}
    return {"fingerprint": "0x" + obj.invoice.fingerprint.hex()}


def _assert_check(kind: str, obj: Obj, result: dict[str, Any]) -> None:
    live = obj.shape.status != "cancelled"
    assert result["registered"] is live, result
    if live:
        assert result["receivable_id"] == obj.id and result["status"] == obj.shape.status
    if sees_parties(kind, obj.shape):
        assert result["parties"] is not None and result["parties"]["face_value"] == obj.invoice.face_value
    else:
        assert result["parties"] is None, (kind, result)
    assert "advance" not in str(result)


CHECK_CELLS = [
    pytest.param(way, shape, kind, id=f"{way}-{shape.name}-{kind}")
    for way in CHECK_WAYS
    for shape in SHAPES
    for kind in KINDS
]


@pytest.mark.parametrize(("way", "shape", "kind"), CHECK_CELLS)
def test_a_check_answers_everyone_yes_or_no_and_names_parties_only_to_parties(
    world: World, way: str, shape: Shape, kind: str
) -> None:
    obj = world.objects[shape.name]
    answer = world.api.post("/checks", json=_check_body(obj, way), headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
        return
    assert answer.status_code == 200, answer.text
    _assert_check(kind, obj, answer.json())


@pytest.mark.parametrize("kind", KINDS)
def test_a_bulk_check_names_parties_line_by_line_only_to_parties(world: World, kind: str) -> None:
    objs = list(world.objects.values())
    answer = world.api.post("/checks/bulk", json={"invoices": [o.fields for o in objs]}, headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
        return
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(objs)
    for obj, result in zip(objs, results, strict=True):
        _assert_check(kind, obj, result)
        for flag in result["near_duplicates"]:  # another registration is named only to its parties
            if flag["receivable_id"] is not None:
                other = next(o for o in objs if o.id == flag["receivable_id"])
                assert sees_parties(kind, other.shape)


@pytest.mark.parametrize("kind", KINDS)
def test_checking_an_unknown_invoice_key_says_not_registered(world: World, kind: str) -> None:
    answer = world.api.post("/checks", json={"invoice_key": UNKNOWN_KEY}, headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
        return
    assert answer.status_code == 200
    assert answer.json()["registered"] is False and answer.json()["parties"] is None


# ---------------------------------------------------------------------------------------- writes


class Guard(Enum):
    """How the contract tells the entitled signer from everyone else."""

    CREDITOR_ROLE = "any active creditor entity"
    DEBTOR_OF_RECORD = "the debtor of the receivable"
    CREDITOR_OF_RECORD = "the creditor of the receivable"
    HOLDER = "the holder of the receivable"
    PAYEE_OF_CLAIM = "the payee named in the payment claim"
    ADMIN = "the consortium admin"


Prepare = Callable[[World], tuple[Any, ...]]


@dataclass(frozen=True)
class Action:
    id: str
    action: str  # the endpoint: /actions/<action>
    entitled: str
    guard: Guard
    prepare: Prepare  # brings the state about; returns the call's arguments
    emits: str
    prepare_refused: Prepare | None = None  # when refused cells need no (or another) state
    cleanup: Callable[[World], None] | None = None

    @property
    def function(self) -> str:
        return ACTION_FUNCTIONS[self.action]


def _split(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, [invoice.face_value // 2, invoice.face_value - invoice.face_value // 2])


def _reassignment(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, w.entity("other_factor"), invoice.face_value * 8 // 10, False, ZERO32)


def _first_assignment(w: World) -> tuple[Any, ...]:
    rid, invoice = w.confirmed()
    return (rid, w.entity("factor"), invoice.face_value * 9 // 10, True, keccak(text="terms"))


def _payment_report(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, w.entity("factor"), invoice.face_value // 2, keccak(text="bank ref 1"))


def _payment_record(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, invoice.face_value // 2, keccak(text="bank ref 2"))


def _second_key_of_throwaway(w: World) -> tuple[Any, ...]:
    entity = w.throwaway_participant()
    key = Account.create().address
    w.registry.add_key(w.admin, entity, key)
    return (key,)


def _suspended_throwaway(w: World) -> tuple[Any, ...]:
    entity = w.throwaway_participant()
    w.registry.suspend_participant(w.admin, entity)
    return (entity,)


def _pause_first(w: World) -> tuple[Any, ...]:
    w.registry.pause(w.admin)
    return ()


def _unpause(w: World) -> None:
    if w.registry.paused():
        w.registry.unpause(w.admin)


ACTIONS: tuple[Action, ...] = (
    Action("register", "register", "creditor", Guard.CREDITOR_ROLE,
           lambda w: (w.invoice()[0].as_contract_input(),), "ReceivableRegistered"),
    Action("register-batch", "register-batch", "creditor", Guard.CREDITOR_ROLE,
           lambda w: ([w.invoice()[0].as_contract_input(), w.invoice()[0].as_contract_input()],),
           "ReceivableRegistered"),
    Action("confirm", "confirm", "debtor", Guard.DEBTOR_OF_RECORD,
           lambda w: (lambda r: (r[0], r[1].fingerprint))(w.registered()), "ReceivableConfirmed"),
    Action("dispute", "dispute", "debtor", Guard.DEBTOR_OF_RECORD,
           lambda w: (w.registered()[0], int(DisputeReason.GOODS_NOT_RECEIVED)), "ReceivableDisputed"),
    Action("resolve-dispute-withdrawn", "resolve-dispute", "debtor", Guard.DEBTOR_OF_RECORD,
           lambda w: (w.disputed(), int(DisputeResolution.WITHDRAWN)), "DisputeResolved"),
    Action("resolve-dispute-upheld", "resolve-dispute", "creditor", Guard.CREDITOR_OF_RECORD,
           lambda w: (w.disputed(), int(DisputeResolution.UPHELD)), "ReceivableCancelled"),
    Action("report-payment", "report-payment", "debtor", Guard.DEBTOR_OF_RECORD, _payment_report, "PaymentReported"),
    Action("cancel", "cancel", "creditor", Guard.CREDITOR_OF_RECORD, lambda w: (w.registered()[0],),
           "ReceivableCancelled"),
    Action("assign-by-creditor", "assign", "creditor", Guard.HOLDER, _first_assignment, "ReceivableAssigned"),
    Action("assign-by-factor", "assign", "factor", Guard.HOLDER, _reassignment, "ReceivableAssigned"),
    Action("split", "split", "factor", Guard.HOLDER, _split, "ReceivableSplit"),
    Action("record-payment", "record-payment", "factor", Guard.HOLDER, _payment_record, "PaymentRecorded"),
    Action("buy-back", "buy-back", "factor", Guard.HOLDER, lambda w: (w.assigned(recourse=True)[0],),
           "ReceivableBoughtBack"),
    Action("declare-default", "declare-default", "factor", Guard.HOLDER, lambda w: (w.overdue(),),
           "ReceivableDefaulted"),
    Action("write-off", "write-off", "factor", Guard.HOLDER, lambda w: (w.defaulted(),), "ReceivableWrittenOff"),
    Action("acknowledge-payment", "acknowledge-payment", "factor", Guard.PAYEE_OF_CLAIM, lambda w: (w.claim(),),
           "PaymentRecorded"),
    Action("reject-payment", "reject-payment", "factor", Guard.PAYEE_OF_CLAIM, lambda w: (w.claim(),),
           "PaymentRejected"),
    Action("admit-participant", "admit-participant", "admin", Guard.ADMIN,
           lambda w: (keccak(text=uuid.uuid4().hex), [bytes(Role.CREDITOR)], Account.create().address),
           "ParticipantAdmitted"),
    Action("grant-entity-role", "grant-entity-role", "admin", Guard.ADMIN,
           lambda w: (w.throwaway_participant(), bytes(Role.CREDITOR)), "EntityRoleGranted"),
    Action("revoke-entity-role", "revoke-entity-role", "admin", Guard.ADMIN,
           lambda w: (w.throwaway_participant(), bytes(Role.FACTOR)), "EntityRoleRevoked"),
    Action("suspend-participant", "suspend-participant", "admin", Guard.ADMIN,
           lambda w: (w.throwaway_participant(),), "ParticipantSuspended"),
    Action("reinstate-participant", "reinstate-participant", "admin", Guard.ADMIN, _suspended_throwaway,
           "ParticipantReinstated"),
    Action("add-key", "add-key", "admin", Guard.ADMIN,
           lambda w: (w.throwaway_participant(), Account.create().address), "KeyAdded"),
    Action("revoke-key", "revoke-key", "admin", Guard.ADMIN, _second_key_of_throwaway, "KeyRevoked"),
    Action("pause", "pause", "admin", Guard.ADMIN, lambda w: (), "Paused", cleanup=_unpause),
    Action("unpause", "unpause", "admin", Guard.ADMIN, _pause_first, "Unpaused",
           prepare_refused=lambda w: (), cleanup=_unpause),
)  # fmt: skip


def entitled(action: Action, kind: str) -> bool:
    return kind == action.entitled or (action.guard is Guard.CREDITOR_ROLE and kind == "other_creditor")


def expected_refusal(action: Action, kind: str, w: World) -> tuple[str, dict[str, Any]]:
    """The contract error (name, some fields) that refuses ``kind`` signing ``action``."""
    if action.guard is Guard.ADMIN:
        return "AccessControlUnauthorizedAccount", {"account": w.account(kind).address}
    if kind == "admin":  # the admin holds no participant key
        return "UnknownKey", {"key": w.account(kind).address}
    caller = w.entity(kind)
    if action.guard is Guard.CREDITOR_ROLE:
        return "EntityMissingRole", {"entityId": caller}
    if action.guard is Guard.DEBTOR_OF_RECORD:
        return "NotDebtorOfRecord", {"caller": caller}
    if action.guard is Guard.CREDITOR_OF_RECORD:
        return "NotCreditorOfRecord", {"caller": caller}
    if action.guard is Guard.HOLDER:
        return "NotHolder", {"caller": caller, "holder": w.entity(action.entitled)}
    return "NotPayeeOfClaim", {"caller": caller, "payee": w.entity(action.entitled)}


_refused_args: dict[str, tuple[Any, ...]] = {}


def refused_args(action: Action, w: World) -> tuple[Any, ...]:
    """The state refused cells of ``action`` share: nothing is submitted, so it stays as prepared."""
    if action.id not in _refused_args:
        _refused_args[action.id] = (action.prepare_refused or action.prepare)(w)
        w.wait_indexed()
    return _refused_args[action.id]


@dataclass(frozen=True)
class Tally:
    block: int
    nonces: dict[str, int]
    relayed: int


def tally(w: World, *kinds: str) -> Tally:
    nonces = {k: w.registry.forwarder_nonce(w.account(k).address) for k in kinds}
    return Tally(w.registry.chain.block_number(), nonces, w.relayed_count())


def assert_nothing_submitted(w: World, before: Tally) -> None:
    assert tally(w, *before.nonces) == before, "a refused request changed the chain or the relay log"


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return actual.lower() == expected.lower()
    return bool(actual == expected)


ALLOWED = [pytest.param(a, k, id=f"{a.id}-{k}") for a in ACTIONS for k in SIGNED_IN_KINDS if entitled(a, k)]
REFUSED = [pytest.param(a, k, id=f"{a.id}-{k}") for a in ACTIONS for k in KINDS if not entitled(a, k)]


@pytest.mark.parametrize(("action", "kind"), ALLOWED)
def test_an_entitled_signer_relays_its_own_request_through_the_api(world: World, action: Action, kind: str) -> None:
    try:
        args = action.prepare(world)
        request = world.sign(world.account(kind), action.function, *args)
        answer = world.api.post(f"/actions/{action.action}", json=request_body(request), headers=world.headers[kind])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["function"] == action.function and body["duplicate"] is False
        assert action.emits in {e["name"] for e in body["events"]}
        assert world.registry.forwarder_nonce(request.sender) == request.nonce + 1
    finally:
        if action.cleanup is not None:
            action.cleanup(world)


@pytest.mark.parametrize(("action", "kind"), REFUSED)
def test_a_signer_who_is_not_entitled_is_refused_by_the_simulation_and_nothing_is_submitted(
    world: World, action: Action, kind: str
) -> None:
    args = refused_args(action, world)
    request = world.sign(world.account(kind), action.function, *args, entitled=False)
    before = tally(world, kind)
    answer = world.api.post(f"/actions/{action.action}", json=request_body(request), headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
    else:
        error, fields = expected_refusal(action, kind, world)
        assert (answer.status_code, answer.json()["code"]) == (403, f"contract.{error}"), answer.text
        for name, value in fields.items():
            assert _same(answer.json()["fields"][name], value), (name, answer.json())
    assert_nothing_submitted(world, before)


@pytest.mark.parametrize(("action", "kind"), REFUSED)
def test_a_request_signed_by_someone_else_than_the_signed_in_principal_is_refused(
    world: World, action: Action, kind: str
) -> None:
    args = refused_args(action, world)
    signer = action.entitled
    request = world.sign(world.account(signer), action.function, *args, entitled=False)
    before = tally(world, signer)
    answer = world.api.post(f"/actions/{action.action}", json=request_body(request), headers=world.headers[kind])
    if kind in AT_THE_DOOR:
        _refused_at_the_door(answer, kind)
    else:
        assert (answer.status_code, answer.json()["code"]) == (403, "forbidden"), answer.text
    assert_nothing_submitted(world, before)


# ---------------------------------------------------------------------------------------- suspension and revocation


def test_a_suspended_entitys_session_is_refused_at_once_not_at_expiry(world: World) -> None:
    key: LocalAccount = Account.create()
    entity = world.registry.admit_participant(world.admin, keccak(text=uuid.uuid4().hex), [Role.DEBTOR], key.address)
    world.wait_indexed()
    headers = world.sign_in(key)
    assert world.api.get("/auth/me", headers=headers).json()["entity"] == entity
    world.wait_indexed(world.registry.suspend_participant(world.admin, entity).block_number)
    answer = world.api.get("/auth/me", headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.entity_suspended")
    assert answer.headers["www-authenticate"] == "Bearer"
    world.wait_indexed(world.registry.reinstate_participant(world.admin, entity).block_number)
    assert world.api.get("/auth/me", headers=headers).status_code == 200


def test_a_stranger_cannot_sign_in(world: World) -> None:
    stranger = world.account("stranger")
    challenge = world.api.post("/auth/challenge", json={"address": stranger.address}).json()
    signature = bytes(stranger.sign_message(encode_defunct(text=challenge["message"])).signature)
    answer = world.api.post(
        "/auth/session", json={"message": challenge["message"], "signature": "0x" + signature.hex()}
    )
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.unknown_key")


# ---------------------------------------------------------------------------------------- the matrix covers the API


def api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute of an app with its full path, through included routers (which FastAPI may keep
    as nodes of their own rather than copying their routes into the app)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):
            context = getattr(route, "include_context", None)
            yield from api_routes(route.original_router.routes, prefix + getattr(context, "prefix", ""))


def test_the_matrix_covers_every_route_that_takes_a_path_parameter(world: World) -> None:
    app: FastAPI = world.api.app  # type: ignore[assignment]
    routes = list(api_routes(list(app.routes)))
    assert len(routes) > len(ACTIONS), "introspection missed routes"
    # /actions/{action}/prepare reads nothing: it simulates the call as the signed-in user, so the contract
    # decides who may (tests/api/test_prepare.py), exactly as for the relayed action itself.
    prepare = "/actions/{action}/prepare"
    assert prepare in {path for path, _ in routes}
    # Objects that are not receivables, with their own principal x object tests: flags (test_flags.py: a
    # party to the receivable or an auditor), a participant's own subscriptions and dead letters
    # (test_notices.py: 404 for anyone else).
    own_matrices = {
        "/flags/{flag_id}/clear",
        "/notices/subscriptions/{sub_id}",
        "/notices/dead-letters/{delivery_id}/retry",
    }
    with_parameters = {path for path, _ in routes if "{" in path} - {prepare} - own_matrices
    assert with_parameters, "introspection found no parameterised route"
    assert with_parameters - {read.route for read in READS} == set(), "routes with a path parameter outside the matrix"
    actions = {path for path, _ in routes if path.startswith("/actions/")} - {prepare}
    assert actions == {f"/actions/{a.action}" for a in ACTIONS}, "action endpoints without a row (or rows without one)"
    checks = {path for path, _ in routes if path.startswith("/checks")}
    assert checks == {"/checks", "/checks/bulk"}


def test_the_specification_is_not_vacuous() -> None:
    """Guards the tables: every kind reads something or nothing by design, every action has refusals."""
    assert {k for k in PARTY_KINDS if any(reads(k, s) for s in SHAPES)} == set(PARTY_KINDS) - {
        "other_creditor",
        "other_debtor",
    }
    assert all(any(not entitled(a, k) for k in SIGNED_IN_KINDS) for a in ACTIONS)
    assert len({a.id for a in ACTIONS}) == len(ACTIONS)
