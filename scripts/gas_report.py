"""Gas per registry operation, with 1, 1,000 and 10,000 receivables already registered, beside its
storage floor; checks the issue's ceilings and that gas does not grow with the registry.

    python scripts/gas_report.py --json gas.json

Operations (each measured as the gas used by its own mined transaction, sent by the party the
contract requires):

    register                    register(): one invoice, by the creditor
    register_batch_per_invoice  registerBatch() of 100 invoices, by the creditor, gas / 100
    confirm                     confirm(): by the debtor of record
    assign                      assign(): the creditor (holder) assigns a confirmed receivable to a factor
    reassign                    assign(): that factor, now the holder, assigns it on to another factor
    payment                     recordPayment(): partial (a quarter of the face value), by the holder
    settle                      recordPayment(): the final payment that settles it, by the holder
    split                       split(): a confirmed receivable into 2 parts, by the creditor (holder)

Storage floor = new storage slots written x 22,100 (cold SSTORE from zero: 20,000 + 2,100 cold
access) + 21,000 (the transaction's base cost), counted from contracts/ReceivableRegistry.sol:

    register   3 new slots: _receivables[id] (the Receivable struct packs creditor, debtor, holder
               (uint24 x 3), status, recourse, dueDate (uint32), faceValue and paid (uint64 x 2) in
               31 bytes: one slot), _idByInvoiceKey[key], _idByFingerprint[fingerprint].
               The counters (_receivableCount and _eventCount share slot 1 with Pausable's flag) and
               the ledger head (_head) already hold non-zero values: updates, not new slots.
               Floor 3 x 22,100 + 21,000 = 87,300.
    register_batch_per_invoice  the same 3 slots per line, the base cost shared by the 100 lines:
               3 x 22,100 + 21,000 / 100 = 66,510.
    confirm, assign, reassign, payment, settle
               0 new slots (status, holder, recourse and paid live in the receivable's existing
               slot; the ledger head and counter are updates): floor 21,000.
    split      per part 2 new slots (the part's Receivable struct and _parents[part]); the parent's
               status is an update: 2 parts x 2 x 22,100 + 21,000 = 109,400.

The script checks that count on the chain as well: a prestate-diff trace of every measured
transaction lists the registry's storage slots that were zero before and are set after, and a
count that differs from the one above fails the run (the floor would be wrong).

Ceilings from the issue: register 130k, registerBatch 100k per invoice, confirm 45k, assign 80k,
payment (recordPayment, partial) 60k; reassign and settle are held to the ceilings of the functions
they call (assign 80k, recordPayment 60k); split has none. Flatness: an operation whose gas grows by more than 1% from
1 to 1,000 or 10,000 registered receivables fails. Exit code 1 on any failure.

The registry is filled between levels with big batches (scripts/_bench.py::fill); the measured
transactions run with automine on Anvil (base fee 0, block gas limit 300M), each in its own block.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _bench as B

from registry.chain.client import TxResult
from registry.demo import Member
from registry.invoice import Invoice

LEVELS = (1, 1_000, 10_000)
BATCH = 100
SSTORE_NEW = 22_100
TX_BASE = 21_000
FLATNESS = 0.01

# New storage slots each operation writes (see the module docstring for the count).
NEW_SLOTS: dict[str, float] = {
    "register": 3,
    "register_batch_per_invoice": 3,
    "confirm": 0,
    "assign": 0,
    "reassign": 0,
    "split": 2 * 2,
    "payment": 0,
    "settle": 0,
}
FLOORS: dict[str, int] = {
    op: int(slots * SSTORE_NEW + (TX_BASE / BATCH if op == "register_batch_per_invoice" else TX_BASE))
    for op, slots in NEW_SLOTS.items()
}
CEILINGS: dict[str, int] = {
    "register": 130_000,
    "register_batch_per_invoice": 100_000,
    "confirm": 45_000,
    "assign": 80_000,
    "reassign": 80_000,  # the same function as assign
    "payment": 60_000,
    "settle": 60_000,  # the same function as payment
}
OPS = tuple(NEW_SLOTS)


def new_slots(s: B.Stack, tx: TxResult) -> int:
    """Storage slots of the registry that were zero before ``tx`` and are non-zero after it."""
    tracer = {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}}
    trace = s.rpc("debug_traceTransaction", tx.tx_hash, tracer)
    address = s.registry.address.lower()
    pre = {k.lower(): v for k, v in trace.get("pre", {}).items()}.get(address, {}).get("storage", {})
    post = {k.lower(): v for k, v in trace.get("post", {}).items()}.get(address, {}).get("storage", {})
    return sum(1 for slot, value in post.items() if int(value, 16) != 0 and int(pre.get(slot, "0x0"), 16) == 0)


def measure_level(
    s: B.Stack, creditor: Member, debtor: Member, factor: Member, other_factor: Member, tag: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Gas of every operation at the registry's current size, and the new slots each one wrote."""
    reg = s.registry
    now = s.now
    single, part = B.make_invoices(debtor.entity, f"GAS-{tag}-S", 2, now)
    batch = B.make_invoices(debtor.entity, f"GAS-{tag}-B", BATCH, now)
    gas: dict[str, int] = {}
    slots: dict[str, int] = {}

    def record(op: str, tx: TxResult, lines: int = 1) -> None:
        gas[op] = round(tx.gas_used / lines)
        slots[op] = round(new_slots(s, tx) / lines)

    tx = reg.transact(creditor.account, "register", single.as_contract_input())
    rid = tx.event("ReceivableRegistered").args["id"]
    record("register", tx)
    record("register_batch_per_invoice", _register_batch(s, creditor, batch), BATCH)
    record("confirm", reg.confirm(debtor.account, rid, single.fingerprint))
    face = single.face_value
    record("assign", reg.assign(creditor.account, rid, factor.entity, face * 9 // 10))
    record("reassign", reg.assign(factor.account, rid, other_factor.entity, face * 9 // 10))
    record("payment", reg.record_payment(other_factor.account, rid, face // 4))
    record("settle", reg.record_payment(other_factor.account, rid, face - face // 4))

    tx = reg.transact(creditor.account, "register", part.as_contract_input())
    pid = tx.event("ReceivableRegistered").args["id"]
    reg.confirm(debtor.account, pid, part.fingerprint)
    pface = part.face_value
    record("split", reg.transact(creditor.account, "split", pid, [pface // 2, pface - pface // 2]))
    return gas, slots


def _register_batch(s: B.Stack, creditor: Member, invoices: list[Invoice]) -> TxResult:
    tx = s.registry.transact(creditor.account, "registerBatch", [i.as_contract_input() for i in invoices])
    accepted = len(tx.events_named("ReceivableRegistered"))
    if accepted != len(invoices):
        raise RuntimeError(f"registerBatch accepted {accepted} of {len(invoices)} lines")
    return tx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="where to write the report")
    args = parser.parse_args()

    report: dict[str, dict[str, int]] = {op: {} for op in OPS}
    slot_failures: list[str] = []
    with B.stack(gas_limit=300_000_000) as s:
        c = s.consortium
        creditor, debtor = c.creditors[0], c.debtors[0]
        factor, other_factor = c.factors[0], c.factors[1]
        filler = c.creditors[1]
        for level in LEVELS:
            missing = level - s.registry.receivable_count()
            if missing > 0:
                B.log(f"filling the registry to {level:,} receivables ...")
                B.fill(s, filler.account, debtor.entity, missing, prefix=f"GASFILL-{level}")
                B.set_automine(s)
            count = s.registry.receivable_count()
            B.log(f"measuring with {count:,} receivables registered ...")
            gas, slots = measure_level(s, creditor, debtor, factor, other_factor, str(level))
            for op in OPS:
                report[op][str(level)] = gas[op]
                if slots[op] != NEW_SLOTS[op]:
                    slot_failures.append(f"{op} at {level}: {slots[op]} new slots on-chain, {NEW_SLOTS[op]} counted")
    for op in OPS:
        report[op]["floor"] = FLOORS[op]

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return _print(report, slot_failures, args.json)


def _print(report: dict[str, dict[str, Any]], slot_failures: list[str], path: Path) -> int:
    failures: list[str] = list(slot_failures)
    head = f"{'operation':28} {'@1':>9} {'@1,000':>9} {'@10,000':>9} {'floor':>9} {'x floor':>8} {'growth':>8} "
    print(head + f"{'ceiling':>9}  result")
    for op in OPS:
        row = report[op]
        g1 = row["1"]
        growth = max(row[str(level)] for level in LEVELS) / g1 - 1
        flat = growth <= FLATNESS
        ceiling = CEILINGS.get(op)
        under = ceiling is None or max(row[str(level)] for level in LEVELS) <= ceiling
        verdicts = []
        if ceiling is not None:
            verdicts.append("ceiling PASS" if under else "ceiling FAIL")
        verdicts.append("flat PASS" if flat else "flat FAIL")
        if not under:
            failures.append(f"{op}: {max(row[str(level)] for level in LEVELS):,} gas over the {ceiling:,} ceiling")
        if not flat:
            failures.append(f"{op}: gas grows {growth:.2%} from 1 to 10,000 receivables (limit {FLATNESS:.0%})")
        print(
            f"{op:28} {row['1']:>9,} {row['1000']:>9,} {row['10000']:>9,} {row['floor']:>9,} "
            f"{g1 / row['floor']:>8.2f} {growth:>+8.2%} {(f'{ceiling:,}' if ceiling else '-'):>9}  "
            + ", ".join(verdicts)
        )
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{'FAIL' if failures else 'PASS'}: wrote {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
