"""Direct mode: writes signed by the user's key and relayed by the configured relayer, reads from the mirror.

Answers have the API's JSON shapes, so that the commands render one shape whichever backend served them.
The mirror is read as a whole (whoever can open the database sees every row): no per-party filter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from registry.cli._common import CliError, hexed, receivable_json
from registry.domain import Status
from registry.errors import InvalidInvoice
from registry.settings import Settings

# How long a write waits for a running indexer to mirror its block before answering "not yet indexed".
WAIT_INDEXED_SECONDS = 30.0


class DirectBackend:
    mode = "direct"

    def __init__(self, settings: Settings, account: LocalAccount | None) -> None:
        self.settings = settings
        self.account = account
        self._client: Any = None
        self._engine: Engine | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def client(self) -> Any:
        if self._client is None:
            from registry.cli._common import registry_client

            self._client = registry_client(self.settings)
        return self._client

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from registry.store.db import make_engine

            self._engine = make_engine(self.settings.database)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._client is not None:
            self._client.chain.close()

    def address(self) -> str:
        if self.account is None:
            raise CliError("this command needs your key", 2, "pass --as NAME or --keystore PATH")
        return str(self.account.address)

    def entity(self) -> int | None:
        entity = int(self.client.entity_of_key(self.address()).entity)
        return entity or None

    def _indexer_running(self) -> bool:
        """Whether an indexer holds the mirror's writer lock. When none does, the schema is brought up to
        date under the lock (the relayer records request digests in the mirror's database)."""
        from registry.store.db import WriterLock, WriterLockHeld, migrate

        lock = WriterLock(self.engine)
        try:
            lock.acquire()
        except WriterLockHeld:
            return True
        try:
            migrate(self.engine)
        finally:
            lock.release()
        return False

    # ------------------------------------------------------------------ writes

    def write(self, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
        from registry.actions import build_call
        from registry.chain.reverts import decode_revert
        from registry.keys import account_from_key, anvil_account
        from registry.relay import Relayer

        call = build_call(action, args)  # bad input stops here, before any key is used
        if self.account is None:
            raise CliError("this command signs: say who you are", 2, "pass --as NAME or --keystore PATH")
        client = self.client
        request = client.sign_request(self.account, call.function, *call.args)  # simulates: typed revert
        running = self._indexer_running()
        s = self.settings
        from registry.demo import RELAYER_INDEX

        relayer = account_from_key(s.relayer_key) if s.relayer_key else anvil_account(RELAYER_INDEX)
        service = Relayer(client, self.engine, relayer)
        outcome = service.submit(request, call.function, wait_indexed=WAIT_INDEXED_SECONDS if running else 0.0)
        indexed = outcome.block_number is not None and service.wait_indexed(outcome.block_number, 0)
        events: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] | None = None
        if outcome.result is not None:
            events = [{"name": e.name, "args": hexed(e.args), "log_index": e.log_index} for e in outcome.result.events]
            if outcome.function == "registerBatch":
                rejected = {
                    e.args["line"]: decode_revert(e.args["reason"])
                    for e in outcome.result.events_named("RegistrationRejected")
                }
                accepted = iter(sorted(e.args["id"] for e in outcome.result.events_named("ReceivableRegistered")))
                total = len(rejected) + len(outcome.result.events_named("ReceivableRegistered"))
                lines = [
                    {"line": i, "error": rejected[i].error_name, "fields": hexed(rejected[i].fields)}
                    if i in rejected
                    else {"line": i, "id": next(accepted)}
                    for i in range(total)
                ]
        return {
            "function": outcome.function,
            "summary": call.summary,
            "digest": "0x" + outcome.digest.hex(),
            "tx_hash": outcome.tx_hash,
            "block": outcome.block_number,
            "duplicate": outcome.duplicate,
            "indexed": bool(indexed),
            "events": events,
            "line_outcomes": lines,
        }

    # ------------------------------------------------------------------ reads

    def _as_of(self, conn: Connection) -> dict[str, Any]:
        from registry.store.queries import freshness

        fresh = freshness(conn)
        if fresh is None:
            raise CliError(
                f"the mirror {self.engine.url.render_as_string(hide_password=True)} has not indexed any block",
                2,
                "index the chain first: `registry index --once`, or run `registry up`",
            )
        return {
            "block": fresh.block_number,
            "block_hash": fresh.block_hash,
            "block_timestamp": fresh.block_timestamp,
            "staleness_seconds": round(fresh.staleness_seconds, 3),
        }

    def _connect(self) -> Connection:
        from sqlalchemy.exc import OperationalError

        try:
            return self.engine.connect()
        except OperationalError as exc:
            raise CliError(f"cannot open the mirror: {exc.orig}", 2, "check REGISTRY_DATABASE_URL") from None

    def receivables(self, filters: Mapping[str, Any], limit: int) -> dict[str, Any]:
        from registry.store.queries import ReceivableFilter, Visibility, receivables_page

        status = filters.get("status")
        flt = ReceivableFilter(
            status=Status[str(status).upper()] if status else None,
            debtor=filters.get("debtor"),
            creditor=filters.get("creditor"),
            holder=filters.get("holder"),
            currency=filters.get("currency"),
            due_from=filters.get("due_from"),
            due_to=filters.get("due_to"),
        )
        with self._connect() as conn:
            stamp = self._as_of(conn)
            if filters.get("overdue"):
                flt = dataclasses.replace(flt, overdue_at=stamp["block_timestamp"])
            rows, cursor = receivables_page(conn, flt, Visibility(everything=True), limit=limit)
        return {"items": [receivable_json(r) for r in rows], "next_cursor": cursor, "as_of": stamp}

    def receivable(self, receivable_id: int, block: int | None = None) -> dict[str, Any]:
        from registry.store import queries

        with self._connect() as conn:
            stamp = self._as_of(conn)
            if block is not None and block > stamp["block"]:
                raise CliError(f"block {block} is beyond the mirror's block {stamp['block']}", 2)
            row = queries.receivable_as_of(conn, receivable_id, block)
            if row is None:
                at = stamp["block"] if block is None else block
                raise CliError(
                    f"no receivable {receivable_id} in the mirror as of block {at}",
                    1,
                    "list them with `registry invoices list`",
                )
            history = queries.receivable_history(conn, receivable_id, block)
        return {
            "receivable": receivable_json(row),
            "versions": [receivable_json(v) for v in history["versions"]],
            "assignments": [_assignment(a) for a in history["assignments"]],
            "payments": [
                {
                    "block": p["block_number"],
                    "payee": p["payee"],
                    "amount": p["amount"],
                    "paid_total": p["paid_total"],
                    "claim_id": p["claim_id"],
                }
                for p in history["payments"]
            ],
            "parent_id": row["parent_id"],
            "parts": history["parts"],
            "as_of": stamp,
        }

    def payee(self, receivable_id: int) -> dict[str, Any]:
        detail = self.receivable(receivable_id)
        row, chain = detail["receivable"], detail["assignments"]
        if chain:
            last = chain[-1]
            because = (
                f"assigned to entity {last['to_entity']} by entity {last['from_entity']} in block {last['block']}; "
                "the registered assignment is notice to the debtor: only a payment to the assignee of the latest "
                "notice discharges the debtor"
            )
            if row["holder"] == row["creditor"]:
                because = "bought back by the creditor under recourse after the assignments below; pay the creditor"
        else:
            because = "never assigned: no notice of assignment has been given, so the debtor pays its creditor"
        return {
            "receivable_id": receivable_id,
            "payee_of_record": row["holder"],
            "because": because,
            "chain": chain,
            "as_of": detail["as_of"],
        }

    def priority(self, invoice_key: str) -> dict[str, Any]:
        from registry.store.queries import registrations_of_key

        key = _hash32(invoice_key, "invoice_key")
        with self._connect() as conn:
            stamp = self._as_of(conn)
            rows = registrations_of_key(conn, key)
        if not rows:
            raise CliError(f"no registration of invoice key {invoice_key}", 1, "check the key (`finance check`)")
        claims, rank = [], 0
        for r in rows:
            live = Status(r["status"]).is_live
            rank += 1 if live else 0
            claims.append(
                {
                    "rank": rank if live else 0,
                    "receivable_id": r["id"],
                    "status": Status(r["status"]).name.lower(),
                    "registered_block": r["registered_block"],
                    "live": live,
                    "reason": f"registered in block {r['registered_block']}: registration order decides priority"
                    if live
                    else "cancelled before confirmation: holds no claim",
                }
            )
        return {
            "invoice_key": invoice_key,
            "claims": claims,
            "explanation": "A registered assignment beats an unregistered one, and between registered ones the "
            "earlier registration wins (PRC Civil Code art. 768); one live registration per invoice key.",
            "as_of": stamp,
        }

    def check(self, invoices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from registry.checks import DuplicateChecker
        from registry.invoice import Invoice

        parsed: list[Invoice] = []
        positions: list[int] = []
        out: list[dict[str, Any]] = [{} for _ in invoices]
        for i, fields in enumerate(invoices):
            try:
                parsed.append(Invoice.parse(**fields))
                positions.append(i)
            except InvalidInvoice as exc:
                out[i] = _empty_check(
                    {"code": "invalid_invoice", "field": exc.field, "message": str(exc), "errors": exc.field_errors()}
                )
            except (TypeError, ValueError) as exc:
                out[i] = _empty_check({"code": "invalid_invoice", "field": "invoice", "message": str(exc)})
        viewer = None
        if self.account is not None:
            viewer = self.entity()
        with self._connect() as conn:
            self._as_of(conn)
        results = DuplicateChecker(self.engine).check_many(parsed, viewer_entity=viewer) if parsed else []
        for position, result in zip(positions, results, strict=True):
            out[position] = {
                "registered": result.registered,
                "status": result.status.name.lower(),
                "financed": result.financed,
                "receivable_id": result.receivable_id,
                "match": str(result.match) if result.match else None,
                "parties": dataclasses.asdict(result.parties) if result.parties else None,
                "near_duplicates": [
                    {
                        "reason": str(n.reason),
                        "risk": str(n.risk),
                        "receivable_id": n.receivable_id,
                        "batch_line": positions[n.batch_line] if n.batch_line is not None else None,
                    }
                    for n in result.near_duplicates
                ],
                "duplicate_of_line": positions[result.duplicate_of_line]
                if result.duplicate_of_line is not None
                else None,
                "as_of": {"block": result.as_of_block, "block_hash": result.as_of_block_hash},
            }
        return out


def _empty_check(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "registered": False,
        "status": "none",
        "financed": False,
        "receivable_id": None,
        "match": None,
        "parties": None,
        "near_duplicates": [],
        "duplicate_of_line": None,
        "error": error,
    }


def _assignment(a: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "block": a["block_number"],
        "from_entity": a["from_entity"],
        "to_entity": a["to_entity"],
        "advance": a["advance"],
        "recourse": bool(a["recourse"]),
        "terms_hash": hexed(a["terms_hash"]),
    }


def _hash32(text: str, field: str) -> bytes:
    value = text.strip()
    if not (value.startswith("0x") and len(value) == 66):
        raise CliError(f"invalid {field}: must be 32 bytes as 0x-hex", 2)
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise CliError(f"invalid {field}: not hex", 2) from None
