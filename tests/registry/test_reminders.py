"""The reminder worker over a mirror written by hand: each notice kind at its step, delivery by signed
webhook and SMTP, retries and dead letters, restarts and reorgs.

Time is block time: block ``n`` of the test chain is ``T0 + n`` hours, and moving the mirror's cursor
to a block is how a test lets time pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from registry import reminders
from registry.domain import ClaimStatus, Status
from registry.indexer.projector import rollback_to, write_cursor
from registry.notify import NOTICE_ID_HEADER, SIGNATURE_HEADER, Outgoing, WebhookTransport
from registry.reminders import Channel, CycleReport, DeliveryState, ReminderWorker
from registry.settings import Settings
from registry.store.db import make_engine, migrate
from registry.store.models import (
    BlockHeader,
    Notice,
    NoticeAttempt,
    NoticeDelivery,
    PaymentClaimRow,
    Receivable,
    table_of,
)

HOUR = 3_600
DAY = 24  # blocks
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SECRET = "test-webhook-secret"
DEBTOR, CREDITOR, FACTOR = 11, 21, 31


def block_time(n: int) -> int:
    return T0 + n * HOUR


class Mirror:
    """Writes receivables, claims, the cursor and its block header the way the indexer would (versioned
    rows; a rollback starts a new fork, whose blocks have other hashes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.block = 0
        self.fork = 0

    def block_hash(self, block: int) -> str:
        return f"0x{self.fork:04x}{block:060x}"

    def at(self, block: int) -> None:
        self.block = block
        with self.engine.begin() as conn:
            h = table_of(BlockHeader)
            conn.execute(delete(h).where(h.c.number == block))
            conn.execute(
                insert(h).values(
                    number=block,
                    hash=self.block_hash(block),
                    parent_hash=self.block_hash(block - 1),
                    timestamp=block_time(block),
                )
            )
            write_cursor(
                conn,
                {
                    "chain_id": 31337,
                    "registry_address": "0x" + "11" * 20,
                    "genesis_hash": "0x" + "22" * 32,
                    "deploy_block": 1,
                    "block_number": block,
                    "block_hash": self.block_hash(block),
                    "block_timestamp": block_time(block),
                    "ledger_head": bytes(32),
                    "ledger_count": 0,
                },
            )

    def receivable(
        self, rid: int, status: Status, *, due_block: int, registered: int | None = None, **fields: Any
    ) -> None:
        """A new version of receivable ``rid`` from the cursor block on."""
        t = table_of(Receivable)
        row: dict[str, Any] = {
            "id": rid,
            "valid_from": self.block,
            "valid_to": None,
            "creditor": CREDITOR,
            "debtor": DEBTOR,
            "holder": CREDITOR,
            "status": int(status),
            "recourse": False,
            "face_value": 100_000,
            "paid": 0,
            "currency": "CNY",
            "issue_date": block_time(0),
            "due_date": block_time(due_block),
            "fingerprint": None,
            "invoice_key": None,
            "number_hash": None,
            "document_hash": None,
            "parent_id": None,
            "supersedes": None,
            "registered_block": self.block if registered is None else registered,
        }
        with self.engine.begin() as conn:
            previous = conn.execute(select(t.c.registered_block).where(t.c.id == rid, t.c.valid_to.is_(None))).first()
            if previous is not None:
                row["registered_block"] = previous.registered_block
                conn.execute(update(t).where(t.c.id == rid, t.c.valid_to.is_(None)).values(valid_to=self.block))
            conn.execute(insert(t).values({**row, **fields}))

    def claim(
        self, claim_id: int, rid: int, status: ClaimStatus, *, amount: int = 40_000, payee: int = CREDITOR
    ) -> None:
        t = table_of(PaymentClaimRow)
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.claim_id == claim_id, t.c.valid_to.is_(None)).values(valid_to=self.block))
            conn.execute(
                insert(t).values(
                    claim_id=claim_id,
                    valid_from=self.block,
                    valid_to=None,
                    receivable_id=rid,
                    payee=payee,
                    amount=amount,
                    status=int(status),
                    payment_ref=b"\x01" * 32,
                )
            )

    def rollback(self, ancestor: int) -> None:
        """A reorg as the indexer handles it: rows above the ancestor deleted or reopened, cursor moved."""
        with self.engine.begin() as conn:
            rollback_to(conn, ancestor)
        self.fork += 1
        self.block = ancestor
        with self.engine.begin() as conn:  # the ancestor's header stays; the cursor moves back to it
            h = table_of(BlockHeader)
            stored = conn.execute(select(h.c.hash).where(h.c.number == ancestor)).scalar()
            write_cursor(
                conn,
                {
                    "block_number": ancestor,
                    "block_hash": stored or self.block_hash(ancestor),
                    "block_timestamp": block_time(ancestor),
                },
            )


class FakeClock:
    """The worker's wall clock (backoff and leases), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    migrate(engine)
    yield engine
    engine.dispose()


def worker_settings(tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "webhook_secret": SECRET,
        "reminder_days_before": [7, 1],
        "reminder_overdue_steps": [1, 7, 30],
        "reminder_unconfirmed_days": 5,
        "reminder_unacknowledged_days": 3,
        "notify_max_attempts": 3,
        "notify_backoff": 10.0,
        "notify_backoff_cap": 25.0,
        "notify_lease": 60.0,
        "finality_depth": 64,
    }
    return Settings(**{**values, **overrides})


def make_worker(engine: Engine, settings: Settings, clock: FakeClock, **kwargs: Any) -> ReminderWorker:
    return ReminderWorker(engine, settings, block_timestamp=block_time, clock=clock, **kwargs)


def created(engine: Engine, report: CycleReport) -> list[tuple[str, int, int]]:
    """(kind, step, recipient) of the notices a cycle made, sorted."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Notice.kind, Notice.step, Notice.recipient).where(Notice.id.in_(report.created_ids))
        ).all()
    return sorted((k, s, r) for k, s, r in rows)


# ---------------------------------------------------------------------------------------- receivers


@dataclass
class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1: checks the signature, dedups by notice id, can be told to fail."""

    secret: bytes
    fail: bool = False
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # notice ids, deduplicated by the idempotency key
    bad_signatures: int = 0
    url: str = ""

    def handle(self, headers: Any, body: bytes) -> int:
        if self.fail:
            return 503
        stamp, mac = (part.split("=", 1)[1] for part in headers[SIGNATURE_HEADER].split(","))
        expected = hmac.new(self.secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, mac):
            self.bad_signatures += 1
            return 401
        document = json.loads(body)
        notice_id = headers[NOTICE_ID_HEADER]
        assert document["id"] == notice_id
        self.posts.append((notice_id, document))
        if notice_id not in self.applied:
            self.applied.append(notice_id)
        return 204


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver(SECRET.encode())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(state.handle(self.headers, body))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/notices"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class Mailbox:
    messages: list[bytes] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A tiny SMTP server on 127.0.0.1 (enough of RFC 5321 for smtplib): stores each message's data."""
    box = Mailbox()

    class Session(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.reply("220 test ESMTP")
            while line := self.rfile.readline():
                verb = line.decode().strip().split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250 test")
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 end with <CRLF>.<CRLF>")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    box.messages.append(data)
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
    server.daemon_threads = True
    box.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()
    thread.join(5)


def subscribe(engine: Engine, entity: int, channel: str, target: str, kinds: tuple[str, ...] = ()) -> int:
    with engine.begin() as conn:
        return int(reminders.create_subscription(conn, entity, channel, target, kinds)["id"])


def delivery_states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {n: s for n, s in conn.execute(select(NoticeDelivery.notice_id, NoticeDelivery.state))}


# ---------------------------------------------------------------------------------------- kinds


def test_each_due_notice_kind_falls_due_at_its_step_for_debtor_and_holder(sqlite_engine: Engine, tmp_path: Any) -> None:
    mirror = Mirror(sqlite_engine)
    due = 100 * DAY  # block of the due date (midnight UTC)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=due)
    mirror.at(20)
    mirror.receivable(1, Status.ASSIGNED, due_block=due, holder=FACTOR)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())

    def cycle(block: int) -> list[tuple[str, int, int]]:
        mirror.at(block)
        return created(sqlite_engine, worker.run_once())

    assert cycle(due - 7 * DAY - 1) == []
    assert cycle(due - 7 * DAY) == [("due_soon", 7, DEBTOR), ("due_soon", 7, FACTOR)]
    assert cycle(due - 2 * DAY) == []
    assert cycle(due - 1 * DAY) == [("due_soon", 1, DEBTOR), ("due_soon", 1, FACTOR)]
    assert cycle(due) == [("due_today", 0, DEBTOR), ("due_today", 0, FACTOR)]
    assert cycle(due + DAY - 1) == []
    assert cycle(due + DAY) == [("overdue", 1, DEBTOR), ("overdue", 1, FACTOR)]
    assert cycle(due + 7 * DAY) == [("overdue", 7, DEBTOR), ("overdue", 7, FACTOR)]
    assert cycle(due + 29 * DAY) == []
    assert cycle(due + 30 * DAY) == [("overdue", 30, DEBTOR), ("overdue", 30, FACTOR)]
    assert cycle(due + 300 * DAY) == []
    with sqlite_engine.connect() as conn:
        notices = reminders.list_notices(conn, FACTOR, kind="overdue")
    assert [n["step"] for n in notices] == [1, 7, 30]
    assert notices[0]["payload"]["receivable"]["unpaid"] == 100_000
    message = notices[0]["payload"]["message"]
    assert message == "Receivable 1 (CNY 1,000.00 unpaid) is 1 day overdue (due 2026-04-11)."


def test_unconfirmed_registration_is_escalated_to_the_debtor_after_the_configured_days(
    sqlite_engine: Engine, tmp_path: Any
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(50)
    mirror.receivable(7, Status.REGISTERED, due_block=200 * DAY)
    mirror.receivable(8, Status.REGISTERED, due_block=200 * DAY)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    mirror.at(60)
    mirror.receivable(8, Status.CONFIRMED, due_block=200 * DAY)  # confirmed in time: no escalation

    mirror.at(50 + 5 * DAY - 1)
    assert created(sqlite_engine, worker.run_once()) == []
    mirror.at(50 + 5 * DAY)
    report = worker.run_once()
    assert created(sqlite_engine, report) == [("unconfirmed", 5, DEBTOR), ("unconfirmed", 5, CREDITOR)]
    with sqlite_engine.connect() as conn:
        notice = reminders.list_notices(conn, DEBTOR)[0]
    assert notice["receivable_id"] == 7 and notice["due_at"] == block_time(50) + 5 * 86_400


def test_payment_reported_but_not_acknowledged_is_chased_and_an_acknowledged_one_is_not(
    sqlite_engine: Engine, tmp_path: Any
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(3, Status.CONFIRMED, due_block=300 * DAY)
    mirror.at(100)
    mirror.claim(1, 3, ClaimStatus.PENDING)
    mirror.claim(2, 3, ClaimStatus.PENDING, amount=1_000)
    mirror.at(110)
    mirror.claim(2, 3, ClaimStatus.ACKNOWLEDGED, amount=1_000)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())

    mirror.at(100 + 3 * DAY - 1)
    assert created(sqlite_engine, worker.run_once()) == []
    mirror.at(100 + 3 * DAY)
    report = worker.run_once()
    assert created(sqlite_engine, report) == [
        ("payment_unacknowledged", 3, DEBTOR),
        ("payment_unacknowledged", 3, CREDITOR),
    ]
    with sqlite_engine.connect() as conn:
        claim_ids = {n["claim_id"] for n in reminders.list_notices(conn, None)}
    assert claim_ids == {1}


def test_a_worker_catching_up_sends_only_the_latest_step_and_nothing_for_paid_or_disputed(
    sqlite_engine: Engine, tmp_path: Any
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=30 * DAY)
    mirror.receivable(2, Status.SETTLED, due_block=30 * DAY, paid=100_000)
    mirror.receivable(3, Status.DISPUTED, due_block=30 * DAY)
    mirror.receivable(4, Status.PARTIALLY_PAID, due_block=30 * DAY, paid=99_999)
    mirror.at(30 * DAY + 40 * DAY)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    report = worker.run_once()
    assert created(sqlite_engine, report) == [("overdue", 30, DEBTOR)] * 2 + [("overdue", 30, CREDITOR)] * 2
    with sqlite_engine.connect() as conn:
        assert {n["receivable_id"] for n in reminders.list_notices(conn, None)} == {1, 4}


def test_a_rescan_or_a_restarted_worker_makes_no_second_notice(sqlite_engine: Engine, tmp_path: Any) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    for rid in range(1, 21):
        mirror.receivable(rid, Status.CONFIRMED, due_block=5 * DAY)
    mirror.at(7 * DAY)
    settings = worker_settings(tmp_path)
    first = make_worker(sqlite_engine, settings, FakeClock()).run_once()
    assert first.created == 40
    again = make_worker(sqlite_engine, settings, FakeClock())
    assert again.run_once().created == 0
    assert again.run_once().created == 0
    with sqlite_engine.connect() as conn:
        assert len(reminders.list_notices(conn, None, limit=1_000)) == 40


# ---------------------------------------------------------------------------------------- delivery


def test_webhook_is_signed_and_each_notice_is_applied_once_across_a_crash_between_send_and_record(
    engine: Engine, tmp_path: Any, receiver: WebhookReceiver
) -> None:
    """A kill after the receiver answered but before the outbox recorded it: the restarted worker sends
    the notice again (at least once) under the same notice id, so the receiver applies it once."""
    mirror = Mirror(engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=20 * DAY)
    mirror.receivable(2, Status.CONFIRMED, due_block=20 * DAY, debtor=12)
    subscribe(engine, DEBTOR, "webhook", receiver.url, ("overdue",))
    subscribe(engine, CREDITOR, "webhook", receiver.url)
    settings = worker_settings(tmp_path)
    clock = FakeClock()

    class Killed(BaseException):
        """The process dies here."""

    class CrashAfterSend:
        def __init__(self) -> None:
            self.inner = WebhookTransport(SECRET.encode())
            self.sent = 0

        def send(self, target: str, message: Outgoing) -> None:
            self.inner.send(target, message)
            self.sent += 1
            if self.sent == 2:
                raise Killed

    mirror.at(20 * DAY + DAY)  # overdue 1 day: debtor 11 and creditor (holder) of both receivables
    crashing = make_worker(engine, settings, clock, transports={Channel.WEBHOOK: CrashAfterSend()})
    with pytest.raises(Killed):
        crashing.run_once()
    assert len(receiver.posts) == 2
    states = delivery_states(engine)
    assert sorted(states.values()) == ["delivered", "pending", "sending"]

    restarted = make_worker(engine, settings, clock)
    report = restarted.run_once()
    assert report.delivered == 1  # the pending one; the claimed one waits for its lease
    clock.now += settings.notify_lease + 1
    report = restarted.run_once()
    assert report.delivered == 1 and report.created == 0
    assert sorted(delivery_states(engine).values()) == ["delivered"] * 3
    assert restarted.run_once().delivered == 0
    clock.now += 10 * settings.notify_lease
    assert make_worker(engine, settings, clock).run_once().delivered == 0

    ids = [notice_id for notice_id, _ in receiver.posts]
    assert len(ids) == 4 and len(receiver.applied) == 3  # one notice sent twice, under the same idempotency key
    resent = ids[1]  # the one whose send was not recorded
    assert [doc for notice_id, doc in receiver.posts if notice_id == resent] == [receiver.posts[1][1]] * 2
    assert receiver.bad_signatures == 0
    kinds = {(doc["recipient"], doc["receivable"]["id"]) for _, doc in receiver.posts}
    assert kinds == {(DEBTOR, 1), (CREDITOR, 1), (CREDITOR, 2)}


def test_a_failing_receiver_is_retried_with_backoff_then_dead_lettered_and_can_be_retried(
    sqlite_engine: Engine, tmp_path: Any, receiver: WebhookReceiver
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=20 * DAY)
    subscribe(sqlite_engine, DEBTOR, "webhook", receiver.url)
    settings = worker_settings(tmp_path)  # 3 attempts, 10 s then 20 s (cap 25 s)
    clock = FakeClock()
    worker = make_worker(sqlite_engine, settings, clock)
    receiver.fail = True
    mirror.at(20 * DAY)

    assert worker.run_once().failed == 1
    clock.now += 9.9
    assert worker.run_once().failed == 0  # not yet: the first retry is 10 s later
    clock.now += 0.1
    assert worker.run_once().failed == 1
    clock.now += 19.9
    assert worker.run_once().dead == 0
    clock.now += 0.1
    assert worker.run_once().dead == 1
    clock.now += 1_000
    assert worker.run_once().failed == 0

    with sqlite_engine.connect() as conn:
        letters = reminders.dead_letters(conn, DEBTOR)
        attempts = conn.execute(select(NoticeAttempt.attempt, NoticeAttempt.ok).order_by(NoticeAttempt.id)).all()
        assert reminders.dead_letters(conn, CREDITOR) == []
    assert [(a, bool(ok)) for a, ok in attempts] == [(1, False), (2, False), (3, False)]
    assert len(letters) == 1 and letters[0]["attempts"] == 3 and "HTTP 503" in letters[0]["last_error"]

    receiver.fail = False
    with sqlite_engine.begin() as conn:
        assert not reminders.retry_dead_letter(conn, letters[0]["id"], CREDITOR, now=clock.now)  # not theirs
        assert reminders.retry_dead_letter(conn, letters[0]["id"], DEBTOR, now=clock.now)
    assert worker.run_once().delivered == 1
    assert len(receiver.posts) == 1
    with sqlite_engine.connect() as conn:
        assert reminders.dead_letters(conn, None) == []


def test_notices_go_out_by_email_over_smtp_with_the_notice_id(
    sqlite_engine: Engine, tmp_path: Any, smtp_server: Mailbox
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(5, Status.CONFIRMED, due_block=20 * DAY)
    subscribe(sqlite_engine, DEBTOR, "email", "ap@debtor.example", ("due_soon",))
    settings = worker_settings(tmp_path, smtp_port=smtp_server.port, smtp_from="registry@registry.example")
    worker = make_worker(sqlite_engine, settings, FakeClock())
    mirror.at(20 * DAY - 7 * DAY)
    assert worker.run_once().delivered == 1
    mirror.at(20 * DAY)  # due today: not a kind this subscription asked for
    report = worker.run_once()
    assert report.created == 2 and report.delivered == 0
    assert len(smtp_server.messages) == 1
    mail = message_from_bytes(smtp_server.messages[0])
    notice_id = mail[NOTICE_ID_HEADER]
    assert mail["To"] == "ap@debtor.example" and mail["Message-ID"] == f"<{notice_id}@registry.example>"
    assert "due soon: receivable 5" in mail["Subject"]
    assert "falls due in 7 days" in mail.get_payload()


def test_an_unreachable_smtp_server_is_retried_not_lost(sqlite_engine: Engine, tmp_path: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(5, Status.CONFIRMED, due_block=20 * DAY)
    subscribe(sqlite_engine, DEBTOR, "email", "ap@debtor.example")
    worker = make_worker(sqlite_engine, worker_settings(tmp_path, smtp_port=port), FakeClock())
    mirror.at(20 * DAY)
    report = worker.run_once()
    assert report.failed == 1 and report.delivered == 0
    assert list(delivery_states(sqlite_engine).values()) == ["pending"]


# ---------------------------------------------------------------------------------------- reorgs


def test_a_reorg_withdraws_an_undelivered_notice_and_never_resends_a_delivered_one(
    engine: Engine, tmp_path: Any, receiver: WebhookReceiver
) -> None:
    mirror = Mirror(engine)
    mirror.at(10)
    mirror.receivable(1, Status.REGISTERED, due_block=30 * DAY)
    mirror.receivable(2, Status.CONFIRMED, due_block=30 * DAY)
    mirror.at(20)
    mirror.receivable(1, Status.CONFIRMED, due_block=30 * DAY)  # the confirmation a reorg will take away
    subscribe(engine, DEBTOR, "webhook", receiver.url)
    settings = worker_settings(tmp_path, reminder_unconfirmed_days=60)
    clock = FakeClock()
    worker = make_worker(engine, settings, clock)

    # Due today for both; receivable 2's notice is delivered, receivable 1's is still queued.
    mirror.at(30 * DAY)
    report = CycleReport()
    worker.scan(report)
    assert report.created == 4
    by_receivable = {}
    with engine.connect() as conn:
        for n in reminders.list_notices(conn, DEBTOR):
            by_receivable[n["receivable_id"]] = n["id"]
    with engine.begin() as conn:  # deliver only receivable 2's notice now
        conn.execute(
            update(table_of(NoticeDelivery))
            .where(NoticeDelivery.notice_id == by_receivable[1])
            .values(next_attempt_at=clock.now + 30)
        )
    assert worker.run_once().delivered == 1
    assert [doc["receivable"]["id"] for _, doc in receiver.posts] == [2]

    # The chain reorganises back to block 15: receivable 1's confirmation is gone, time goes back.
    mirror.rollback(15)
    report = worker.run_once()
    assert set(report.withdrawn_ids) >= {by_receivable[1], by_receivable[2]}
    states = delivery_states(engine)
    assert states[by_receivable[1]] == "withdrawn" and states[by_receivable[2]] == "delivered"

    # The new branch: receivable 1 stays unconfirmed, receivable 2 (confirmed before the fork) falls due again.
    clock.now += 1_000
    mirror.at(30 * DAY + 2)
    report = worker.run_once()
    assert report.created == 0 and report.rearmed == 2  # receivable 2's notices, same ids
    assert report.delivered == 0  # delivered before the reorg: not again
    assert [doc["receivable"]["id"] for _, doc in receiver.posts] == [2]
    states = delivery_states(engine)
    assert states[by_receivable[1]] == "withdrawn" and states[by_receivable[2]] == "delivered"
    with engine.connect() as conn:
        withdrawn = reminders.list_notices(conn, DEBTOR, state="withdrawn")
    assert [n["receivable_id"] for n in withdrawn] == [1]


def test_a_settled_receivable_withdraws_its_queued_overdue_notice(engine: Engine, tmp_path: Any) -> None:
    mirror = Mirror(engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=20 * DAY)
    subscribe(engine, DEBTOR, "webhook", "http://127.0.0.1:9/never")
    clock = FakeClock()
    worker = make_worker(engine, worker_settings(tmp_path), clock)
    mirror.at(21 * DAY)
    worker.scan(CycleReport())
    mirror.at(21 * DAY + 1)
    mirror.receivable(1, Status.SETTLED, due_block=20 * DAY, paid=100_000)
    report = worker.run_once()
    assert report.withdrawn == 2 and report.delivered == report.failed == 0
    assert list(delivery_states(engine).values()) == [DeliveryState.WITHDRAWN.value]


# ---------------------------------------------------------------------------------------- subscriptions


@pytest.mark.parametrize(
    ("channel", "target", "kinds", "field"),
    [
        ("sms", "+8613800000000", (), "channel"),
        ("webhook", "ftp://example.com/x", (), "target"),
        ("webhook", "http:///nohost", (), "target"),
        ("webhook", "http://example.com/a b", (), "target"),
        ("email", "not an address", (), "target"),
        ("email", "a@b.example\r\nBcc: all@example.com", (), "target"),
        ("email", "ap@debtor.example", ("overdue", "late"), "kinds"),
    ],
)
def test_bad_subscriptions_are_refused_naming_the_field(
    sqlite_engine: Engine, channel: str, target: str, kinds: tuple[str, ...], field: str
) -> None:
    with sqlite_engine.begin() as conn, pytest.raises(reminders.InvalidSubscription, match=f"^{field}:"):
        reminders.create_subscription(conn, DEBTOR, channel, target, kinds)
    with sqlite_engine.connect() as conn:
        assert reminders.list_subscriptions(conn, DEBTOR) == []


def test_a_deleted_subscription_gets_nothing_more(
    sqlite_engine: Engine, tmp_path: Any, receiver: WebhookReceiver
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=20 * DAY)
    sub = subscribe(sqlite_engine, DEBTOR, "webhook", receiver.url)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    mirror.at(20 * DAY)
    worker.scan(CycleReport())
    with sqlite_engine.begin() as conn:
        assert reminders.delete_subscription(conn, DEBTOR, sub)
        assert not reminders.delete_subscription(conn, DEBTOR, sub)
    assert worker.run_once().delivered == 0
    assert receiver.posts == []


# ---------------------------------------------------------------------------------------- incremental cycles


def test_a_steady_cycle_reads_only_what_changed(sqlite_engine: Engine, tmp_path: Any) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    for rid in range(1, 41):
        mirror.receivable(rid, Status.CONFIRMED, due_block=20 * DAY)
    for rid in range(41, 51):
        mirror.receivable(rid, Status.REGISTERED, due_block=90 * DAY)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    mirror.at(21 * DAY + 2)  # every confirmed one overdue 1 day, every registration unconfirmed
    first = worker.run_once()
    assert first.full and first.created == 40 * 2 + 10 * 2 and first.scanned == 50

    steady = worker.run_once()
    assert not steady.full and steady.since_block == 21 * DAY + 2
    assert (steady.scanned, steady.checked, steady.created, steady.withdrawn) == (0, 0, 0, 0)

    mirror.at(21 * DAY + 3)  # one block, one transition, no step falls due
    mirror.receivable(7, Status.ASSIGNED, due_block=20 * DAY, holder=FACTOR)
    one = worker.run_once()
    assert not one.full and one.scanned == 1
    assert one.checked == 2  # receivable 7's two notices, made within the finality depth
    assert created(sqlite_engine, one) == [("overdue", 1, FACTOR)]  # the new holder is told
    assert one.withdrawn == 1  # the creditor's: it no longer holds the receivable
    assert worker.run_once().scanned == 0


def test_a_notice_that_falls_due_between_two_cycles_with_no_new_block_events_is_still_made(
    sqlite_engine: Engine, tmp_path: Any
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=30 * DAY + 13)  # due at 13:00 UTC
    mirror.receivable(2, Status.REGISTERED, due_block=90 * DAY)
    mirror.receivable(3, Status.PARTIALLY_PAID, due_block=200 * DAY, paid=10_000)
    mirror.claim(1, 3, ClaimStatus.PENDING)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    mirror.at(11)
    assert worker.run_once().created == 0
    made: list[tuple[int, str, int, int]] = []
    for block in range(11 + 6, 62 * DAY, 6):  # only the cursor moves: no row is written
        mirror.at(block)
        report = worker.run_once()
        assert not report.full and report.checked == 0
        assert report.scanned <= 2  # what falls due in these 6 hours, not every open receivable
        made += [(block, k, s, r) for k, s, r in created(sqlite_engine, report)]
    steps = [(k, s) for _, k, s, r in made if r == DEBTOR]
    assert steps == [
        ("payment_unacknowledged", 3),
        ("unconfirmed", 5),
        ("due_soon", 7),
        ("due_soon", 1),
        ("due_today", 0),
        ("overdue", 1),
        ("overdue", 7),
        ("overdue", 30),
    ]
    due_at = {(k, s): b for b, k, s, r in made if r == DEBTOR}
    assert due_at[("due_soon", 1)] == 29 * DAY + 17  # first cycle at or after 29 * DAY + 13
    assert due_at[("due_today", 0)] == 30 * DAY + 5  # first cycle at or after midnight of the due day
    assert due_at[("unconfirmed", 5)] == 10 + 5 * DAY + 1


def test_incremental_cycles_make_the_same_notices_as_full_rescans(tmp_path: Any) -> None:
    """A worker that keeps its watermark and one started afresh for every cycle (a full scan) see the same
    mirror, written by a deterministic random history of transitions, claims and idle stretches."""
    import random

    engines = [make_engine(f"sqlite:///{tmp_path}/{name}.db") for name in ("incremental", "full")]
    for e in engines:
        migrate(e)
    mirrors = [Mirror(e) for e in engines]
    settings = worker_settings(tmp_path)
    incremental = make_worker(engines[0], settings, FakeClock())
    rng = random.Random(20)
    statuses = [Status.REGISTERED, Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID, Status.SETTLED]
    block, claims, totals = 1, 0, [0, 0]
    for _ in range(80):
        block += rng.choice([1, 3, 7, 30, 100])
        for m in mirrors:
            m.at(block)
        for _ in range(rng.randrange(0, 4)):
            rid = rng.randrange(1, 25)
            status = rng.choice(statuses)
            holder = FACTOR if status is Status.ASSIGNED else CREDITOR
            due = (rid * 37) % (40 * DAY) + rng.choice([0, 0, 5 * DAY])
            paid = 100_000 if status is Status.SETTLED else 0
            if rng.random() < 0.2:
                claims += 1
                for m in mirrors:
                    m.claim(claims, rid, ClaimStatus.PENDING)
            for m in mirrors:
                m.receivable(rid, status, due_block=due, holder=holder, paid=paid)
        reports = [incremental.run_once(), make_worker(engines[1], settings, FakeClock()).run_once()]
        assert reports[1].full
        assert created(engines[0], reports[0]) == created(engines[1], reports[1])
        assert sorted(reports[0].withdrawn_ids) == sorted(reports[1].withdrawn_ids)
        totals[0] += reports[0].scanned
        totals[1] += reports[1].scanned
    outboxes = []
    for e in engines:
        with e.connect() as conn:
            outboxes.append(sorted((n["id"], n["state"]) for n in reminders.list_notices(conn, None, limit=10_000)))
    assert len(outboxes[0]) > 20 and outboxes[0] == outboxes[1]
    assert any(state == "withdrawn" for _, state in outboxes[0])
    assert totals[0] < totals[1] / 2
    for e in engines:
        e.dispose()


def test_a_rollback_below_the_last_scanned_block_makes_the_next_cycle_rescan_from_the_ancestor(
    sqlite_engine: Engine, tmp_path: Any
) -> None:
    """The settlement at block 30 is rolled back and the new fork has already passed the worker's block when
    it cycles: the receivable's reopened row carries no new version, so only a rescan finds it overdue."""
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=20 * DAY)
    mirror.receivable(2, Status.CONFIRMED, due_block=20 * DAY)
    mirror.at(30)
    mirror.receivable(1, Status.SETTLED, due_block=20 * DAY, paid=100_000)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    mirror.at(21 * DAY)
    first = worker.run_once()
    assert first.full and created(sqlite_engine, first) == [("overdue", 1, DEBTOR), ("overdue", 1, CREDITOR)]
    mirror.at(21 * DAY + 10)
    assert not worker.run_once().full

    mirror.rollback(20)  # below block 30: the settlement is gone, receivable 1 is open again
    mirror.at(21 * DAY + 20)  # the new fork, past the worker's last block before it cycles again
    report = worker.run_once()
    assert report.full and report.since_block is None
    assert report.scanned == 2
    assert created(sqlite_engine, report) == [("overdue", 1, DEBTOR), ("overdue", 1, CREDITOR)]
    with sqlite_engine.connect() as conn:
        assert {n["receivable_id"] for n in reminders.list_notices(conn, None)} == {1, 2}

    after = worker.run_once()
    assert not after.full and after.since_block == 21 * DAY + 20 and after.scanned == 0


def test_a_rollback_to_the_same_height_on_another_fork_is_noticed_by_its_hash(
    sqlite_engine: Engine, tmp_path: Any
) -> None:
    mirror = Mirror(sqlite_engine)
    mirror.at(10)
    mirror.receivable(1, Status.CONFIRMED, due_block=20 * DAY)
    mirror.at(21 * DAY)
    mirror.receivable(1, Status.SETTLED, due_block=20 * DAY, paid=100_000)
    worker = make_worker(sqlite_engine, worker_settings(tmp_path), FakeClock())
    assert worker.run_once().created == 0
    mirror.rollback(21 * DAY - 1)
    mirror.at(21 * DAY)  # same height, other hash, no settlement on this fork
    report = worker.run_once()
    assert report.full and report.created == 2
