"""Each role signs in to the web portal with its own keystore (unlocked in the page), does its main
task, and sees the result of the others' on its own page: participants by the names in the operator's
directory, the factor's auto-approval policy deciding an offer by itself, reminders on the debtor's page.
Every page is screenshotted into build/screenshots/<role>-<page>.png."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from playwright.sync_api import Browser, Page, expect, sync_playwright

from registry.chain.contract import RegistryClient
from registry.demo import DAY, Consortium, Member
from registry.reminders import ReminderWorker
from registry.store.db import make_engine
from tests.conftest import InvoiceFactory
from tests.e2e.conftest import CHROMIUM, SCREENSHOTS, Portal

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Session:
    """One user's tab: signs in with its keystore, signs requests, takes screenshots; JS errors fail."""

    def __init__(self, browser: Browser, portal: Portal, role: str) -> None:
        self.portal = portal
        self.role = role
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(f"{m.text} ({m.location})") if m.type == "error" else None)

    def sign_in(self, address: str, *, expect_home: bool = True, shot: str | None = None) -> None:
        page = self.page
        page.goto(f"{self.portal.url}/#/signin")
        page.get_by_test_id("keystore-file").set_input_files(str(self.portal.keystore(address)))
        page.get_by_test_id("keystore-password").fill(self.portal.password)
        if shot:
            self.shot(shot)
        page.get_by_test_id("signin-submit").click()
        if expect_home:
            expect(page.get_by_test_id(f"nav-{self.role}")).to_have_class(re.compile("active"))
            expect(page.locator("#asof")).to_contain_text("as of block")

    def sign_and_send(self) -> str:
        page = self.page
        expect(page.get_by_test_id("sign-summary")).to_be_visible()
        page.get_by_test_id("sign-and-send").click()
        result = page.get_by_test_id("action-result")
        expect(result).to_be_visible()
        text = result.inner_text()
        page.get_by_test_id("modal-close").click()
        return text

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.role}-{name}.png"
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        # The event stream's fetch is aborted on close; that is not a page error.
        self.context.close()
        real = [e for e in self.errors if "401" not in e and "AbortError" not in e]
        assert not real, f"{self.role}: errors in the page: {real}"


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _named(member: Member) -> str:
    """How the portal shows a participant the directory names: "Huaxin Manufacturing Group (4)"."""
    return f"{member.name} ({member.entity})"


def _wait_indexed(portal: Portal, block: int) -> None:
    deadline = time.monotonic() + 20
    while (httpx.get(f"{portal.url}/health", timeout=5).json()["indexed_block"] or 0) < block:
        assert time.monotonic() < deadline, f"the mirror did not reach block {block}"
        time.sleep(0.05)


def _fill_invoice(page: Page, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        page.get_by_test_id(f"invoice-{name}").fill(value)


def test_every_role_does_its_task_in_the_portal_and_the_others_see_it(
    browser: Browser, portal: Portal, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    creditor, debtor, factor = consortium.creditors[0], consortium.debtors[0], consortium.factors[0]
    auditor, suspended = consortium.auditors[0], consortium.creditors[1]
    now = int(registry.chain.get_block("latest")["timestamp"], 16)
    invoice = {
        "debtor": str(debtor.entity),
        "invoice_number": "E2E-2026-0001",
        "face_value": "1,850,600.00",
        "currency": "CNY",
        "issue_date": _date(now - 10 * DAY),
        "due_date": _date(now + 60 * DAY),
    }

    # Creditor: registers one invoice, then a CSV whose last line repeats it (refused, the rest go through).
    c = Session(browser, portal, "creditor")
    c.sign_in(creditor.address, shot="signin")
    _fill_invoice(c.page, invoice)
    c.page.get_by_test_id("register-submit").click()
    expect(c.page.get_by_test_id("sign-summary")).to_contain_text("E2E-2026-0001")
    c.shot("register-sign")
    outcome = c.sign_and_send()
    rid = int(re.search(r"#(\d+)", outcome).group(1))  # type: ignore[union-attr]
    assert "registered" in outcome
    mine = c.page.get_by_test_id("mine")
    expect(mine.locator(f'tr[data-id="{rid}"]')).to_contain_text("registered")

    batch = Path(portal.keystores[creditor.address]).parent / "batch.csv"
    batch.write_text(
        "debtor,invoice_number,face_value,currency,issue_date,due_date\n"
        f'{debtor.entity},E2E-B-1,"12,500.00",CNY,{invoice["issue_date"]},{invoice["due_date"]}\n'
        f'{debtor.entity},E2E-B-2,"7,300.50",CNY,{invoice["issue_date"]},{invoice["due_date"]}\n'
        f"{debtor.entity},e2e 2026 0001,1850600,CNY,{invoice['issue_date']},{invoice['due_date']}\n"
    )
    c.page.get_by_test_id("csv-file").set_input_files(str(batch))
    c.page.get_by_test_id("csv-submit").click()
    expect(c.page.get_by_test_id("sign-summary")).to_be_visible()
    c.page.get_by_test_id("sign-and-send").click()
    expect(c.page.get_by_test_id("batch-summary")).to_have_text("2 registered, 1 refused")
    expect(c.page.get_by_test_id("batch-lines")).to_contain_text("already registered")
    c.shot("batch-outcome")
    c.page.get_by_test_id("modal-close").click()
    c.shot("home")

    # Debtor: the invoice is in its inbox; it confirms by typing the invoice from its own records
    # (formatted its own way).
    d = Session(browser, portal, "debtor")
    d.sign_in(debtor.address)
    row = d.page.get_by_test_id("inbox").locator(f'tr[data-id="{rid}"]')
    expect(row).to_contain_text("CNY 1,850,600.00")
    expect(row).to_contain_text(_named(creditor))  # by name, from the operator's directory
    d.shot("inbox")
    d.page.get_by_test_id(f"confirm-{rid}").click()
    _fill_invoice(
        d.page,
        {
            "invoice_number": "e2e 2026 0001",
            "face_value": "1850600",
            "currency": "CNY",
            "issue_date": invoice["issue_date"],
            "due_date": invoice["due_date"],
        },
    )
    d.page.get_by_test_id("confirm-submit").click()
    d.shot("confirm-sign")
    assert "confirmed" in d.sign_and_send()
    expect(d.page.get_by_test_id("owes").locator(f'tr[data-id="{rid}"]')).to_contain_text(_named(creditor))
    expect(d.page.locator("#who")).to_contain_text(_named(debtor))
    d.shot("home")

    # Factor: sets its auto-approval policy (CNY only, face value at most 1,000,000.00) ...
    f = Session(browser, portal, "factor")
    f.sign_in(factor.address)
    expect(f.page.get_by_test_id("policy-version")).to_contain_text("no policy yet")
    f.page.get_by_test_id("policy-enabled").check()
    f.page.get_by_test_id("policy-currencies").fill("cny")
    f.page.get_by_test_id("policy-max_amount").fill("CNY 1,000,000.00 USD")  # malformed: refused here, nothing sent
    f.page.get_by_test_id("policy-save").click()
    expect(f.page.get_by_test_id("error")).to_contain_text("largest face value")
    f.page.get_by_test_id("policy-max_amount").fill("CNY 1,000,000.00")
    f.page.get_by_test_id("policy-save").click()
    expect(f.page.get_by_test_id("policy-saved")).to_contain_text("version 1, deciding offers automatically")
    expect(f.page.get_by_test_id("policy-max_amount")).to_have_value("CNY 1,000,000.00")

    # ... and checks the invoice before buying it.
    _fill_invoice(f.page, {**invoice, "invoice_number": "e2e-2026 0001", "face_value": "1850600.00"})
    f.page.get_by_test_id("check-submit").click()
    expect(f.page.get_by_test_id("check-verdict")).to_have_text("registered, confirmed, not financed")
    f.shot("check")

    # Creditor: offers it to that factor with its signed assignment (after a reload the key is locked:
    # it lives in the page's memory only, so the creditor unlocks it again) ...
    c.page.reload()
    c.page.get_by_test_id(f"assign-{rid}").click()
    c.page.get_by_test_id("assign-factor").fill(str(factor.entity))
    c.page.get_by_test_id("offer-submit").click()
    expect(c.page.get_by_test_id("error")).to_contain_text("locked")
    c.page.get_by_test_id("modal-close").click()
    c.sign_in(creditor.address)
    c.page.get_by_test_id(f"assign-{rid}").click()
    c.page.get_by_test_id("assign-factor").fill(str(factor.entity))
    c.page.get_by_test_id("offer-submit").click()
    expect(c.page.get_by_test_id("sign-summary")).to_contain_text("CNY 1,665,540.00")  # the advance, 90%
    c.shot("offer-sign")
    c.page.get_by_test_id("sign-and-send").click()
    expect(c.page.get_by_test_id("offer-result")).to_contain_text("queued")  # above the policy's largest amount
    expect(c.page.get_by_test_id("offer-result")).to_contain_text("max_amount")
    c.page.get_by_test_id("modal-close").click()

    # ... and the factor takes the assignment; its portfolio shows it and the same check now says financed.
    f.page.get_by_test_id("nav-factor").click()
    offer_row = f.page.get_by_test_id("offers").locator("tr", has_text=f"#{rid}")
    expect(offer_row).to_contain_text("CNY 1,665,540.00")
    expect(offer_row).to_contain_text("max_amount")
    f.shot("offers")
    f.page.get_by_test_id(f"accept-offer-{rid}").click()
    expect(f.page.get_by_test_id("portfolio").locator(f'tr[data-id="{rid}"]')).to_contain_text("assigned")
    expect(f.page.get_by_test_id("offers")).to_contain_text("No offers await your decision.")
    _fill_invoice(f.page, invoice)
    f.page.get_by_test_id("check-submit").click()
    expect(f.page.get_by_test_id("check-verdict")).to_have_text("registered, assigned, financed")
    f.shot("check-financed")

    # An offer within the policy is assigned without the factor clicking anything: the creditor offers a
    # confirmed CNY 500,000.00 receivable and sees it assigned; the factor sees the decision and its rule.
    small = make_invoice(debtor_id=debtor.entity, number="E2E-AUTO-1", amount="500,000.00", due_in_days=45)
    auto = registry.register(creditor.account, small)
    registry.confirm(debtor.account, auto, small.fingerprint)
    _wait_indexed(portal, registry.chain.block_number())
    c.page.get_by_test_id("nav-creditor").click()  # re-renders in the page: the key stays unlocked
    c.page.get_by_test_id(f"assign-{auto}").click()
    c.page.get_by_test_id("assign-factor").fill(str(factor.entity))
    c.page.get_by_test_id("offer-submit").click()
    expect(c.page.get_by_test_id("sign-summary")).to_contain_text("CNY 450,000.00")
    c.page.get_by_test_id("sign-and-send").click()
    expect(c.page.get_by_test_id("offer-result")).to_contain_text(f"to {_named(factor)}: assigned")
    c.shot("offer-assigned")
    c.page.get_by_test_id("modal-close").click()
    assert registry.get_receivable(auto).holder == factor.entity

    f.page.get_by_test_id("nav-factor").click()
    decision = f.page.get_by_test_id("decisions").locator(f"tr.offer-{auto}")
    expect(decision).to_contain_text("assigned")
    expect(decision).to_contain_text("all rules met")
    decision.locator("summary").click()
    rules = decision.locator("ul.rules li")
    expect(rules).to_have_count(10)
    expect(decision.locator('li[data-rule="max_amount"]')).to_have_class(re.compile(r"\bok\b"))
    earlier = f.page.get_by_test_id("decisions").locator(f"tr.offer-{rid}")
    expect(earlier.get_by_test_id(re.compile("offer-rule-"))).to_have_text("decided by hand")
    earlier.locator("summary").click()
    expect(earlier.locator('li[data-rule="max_amount"]')).to_have_class(re.compile(r"\bno\b"))
    expect(f.page.get_by_test_id("portfolio").locator(f'tr[data-id="{auto}"]')).to_contain_text("assigned")
    f.shot("decisions")

    # The reminder worker runs over the mirror: an invoice due in 3 days is a "due soon" reminder on the
    # debtor's page.
    soon = make_invoice(debtor_id=debtor.entity, number="E2E-SOON-1", amount="64,000.00", due_in_days=3)
    due_soon = registry.register(creditor.account, soon)
    registry.confirm(debtor.account, due_soon, soon.fingerprint)
    _wait_indexed(portal, registry.chain.block_number())
    engine = make_engine(portal.settings.database)
    try:
        report = ReminderWorker(engine, portal.settings).run_once()
    finally:
        engine.dispose()
    assert report.created >= 2  # the debtor and the holder (the creditor) are reminded

    # Debtor: sees the reminder; now owes the factor (the payee of record) and reports a partial payment ...
    d.page.get_by_test_id("nav-debtor").click()
    reminder = d.page.get_by_test_id("notices").locator("tr", has_text=f"#{due_soon}")
    expect(reminder).to_contain_text("due soon")
    expect(reminder).to_contain_text(f"Receivable {due_soon} (CNY 64,000.00 unpaid) falls due")
    expect(d.page.get_by_test_id("notices-due-soon").locator(".v")).to_have_text("1")
    d.shot("reminders")
    expect(d.page.get_by_test_id("owes").locator(f'tr[data-id="{rid}"]')).to_contain_text(_named(factor))
    d.page.get_by_test_id(f"report-{rid}").click()
    expect(d.page.get_by_test_id("report-paid-to")).to_have_value(str(factor.entity))
    d.page.get_by_test_id("report-amount").fill("850,600.00")
    d.page.get_by_test_id("report-ref").fill("BANK-REF-0001")
    d.page.get_by_test_id("report-submit").click()
    expect(d.page.get_by_test_id("sign-summary")).to_contain_text("CNY 850,600.00")
    assert "PaymentReported" in d.sign_and_send()

    # ... which the factor acknowledges from its list of payments to acknowledge.
    f.page.get_by_test_id("nav-factor").click()
    claim = f.page.get_by_test_id("claims").locator("tr", has_text=f"#{rid}")
    expect(claim).to_contain_text("CNY 850,600.00")
    claim.get_by_role("button", name="Acknowledge").click()
    assert "PaymentRecorded" in f.sign_and_send()
    row = f.page.get_by_test_id("portfolio").locator(f'tr[data-id="{rid}"]')
    expect(row).to_contain_text("partially paid")
    expect(row).to_contain_text("CNY 1,000,000.00")
    expect(f.page.get_by_test_id("claims")).to_contain_text("No reported payments await you.")
    f.shot("portfolio")

    # Auditor: sees the events, runs a verification (agrees), issues a certificate.
    a = Session(browser, portal, "auditor")
    a.sign_in(auditor.address)
    assigned = a.page.get_by_test_id("event-rows").locator('tr[data-event="ReceivableAssigned"]')
    expect(assigned).to_have_count(2)  # taken by hand, and by the policy
    a.page.get_by_test_id("audit-run").click()
    expect(a.page.get_by_test_id("audit-verdict")).to_contain_text("Agrees", timeout=60_000)
    a.page.get_by_test_id(f"cert-for-{rid}").click()
    expect(a.page.get_by_test_id("cert-verdict")).to_have_text("registered, financed")
    with a.page.expect_download() as download:
        a.page.get_by_test_id("cert-download").click()
    saved = Path(portal.keystores[auditor.address]).parent / "certificate.json"
    download.value.save_as(saved)
    a.page.get_by_test_id("cert-file").set_input_files(str(saved))
    expect(a.page.get_by_test_id("cert-check")).to_contain_text("valid: signed by this registry's issuer")
    a.shot("home")
    a.page.get_by_role("link", name=f"#{rid}", exact=True).first.click()
    history = a.page.get_by_test_id("history")
    expect(history.locator("tbody tr")).to_have_count(4)  # registered, confirmed, assigned, partially paid
    expect(history).to_contain_text("partially paid")
    a.shot("receivable")

    # Operator: suspends a participant; that participant is then refused at sign-in.
    o = Session(browser, portal, "admin")
    o.sign_in(consortium.admin.address)
    o.page.get_by_test_id(f"suspend-{suspended.entity}").click()
    o.sign_and_send()
    expect(o.page.get_by_test_id("participants").locator(f"tr.entity-{suspended.entity}")).to_contain_text("suspended")
    o.shot("participants")

    s = Session(browser, portal, "creditor")
    s.role = "suspended"
    s.sign_in(suspended.address, expect_home=False)
    expect(s.page.get_by_test_id("error")).to_contain_text(f"participant {suspended.entity} is suspended")
    s.shot("refused")

    for session in (c, d, f, a, o, s):
        session.close()


def test_a_browser_wallet_signs_in_and_disputes_an_invoice(
    browser: Browser, portal: Portal, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    """The "Use browser wallet" path: an injected EIP-1193 provider (window.ethereum) whose signatures
    come from the debtor's key held outside the page, as a wallet extension holds it."""
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    rid = registry.register(creditor.account, make_invoice(debtor_id=debtor.entity))
    account = debtor.account
    asked: list[str] = []

    def wallet(method: str, params_json: str) -> str:
        asked.append(method)
        params = json.loads(params_json)
        if method in ("eth_requestAccounts", "eth_accounts"):
            return json.dumps([account.address])
        if method == "eth_chainId":
            return json.dumps(hex(registry.chain.chain_id))
        if method == "personal_sign":
            signed = account.sign_message(encode_defunct(hexstr=params[0]))
            return json.dumps("0x" + bytes(signed.signature).hex())
        if method == "eth_signTypedData_v4":
            assert params[0].lower() == account.address.lower()
            signed = Account.sign_typed_data(account.key, full_message=json.loads(params[1]))
            return json.dumps("0x" + bytes(signed.signature).hex())
        raise ValueError(f"the test wallet does not do {method}")

    s = Session(browser, portal, "debtor")
    s.page.expose_function("testWallet", wallet)
    s.page.add_init_script(
        "window.ethereum = { request: async ({ method, params }) => "
        "JSON.parse(await window.testWallet(method, JSON.stringify(params || []))), "
        "on() {}, removeListener() {} };"
    )
    s.page.goto(f"{portal.url}/#/signin")
    s.page.get_by_test_id("signin-wallet").click()
    expect(s.page.get_by_test_id("nav-debtor")).to_have_class(re.compile("active"))
    s.page.get_by_test_id(f"dispute-{rid}").click()
    s.page.get_by_test_id("dispute-reason").select_option("QUALITY_DEFECT")
    s.page.get_by_test_id("dispute-submit").click()
    expect(s.page.get_by_test_id("sign-summary")).to_contain_text("QUALITY_DEFECT")
    s.page.get_by_test_id("sign-and-send").click()
    expect(s.page.get_by_test_id("action-receivables").locator(f'tr[data-id="{rid}"]')).to_contain_text("disputed")
    s.shot("wallet-dispute")
    assert {"personal_sign", "eth_signTypedData_v4"} <= set(asked)
    s.close()


def test_the_pages_number_csv_and_certificate_helpers_agree_with_the_registry(browser: Browser, portal: Portal) -> None:
    """Amounts are exact in every currency exponent, CSV quoting is RFC 4180, and the certificate's
    canonical JSON is byte for byte what the registry hashes (registry.certificates.canonical_json)."""
    from registry.certificates import canonical_json

    sample = {"b": [1, True, None, {"z": "ＩＮＶ－００１", "a": 'quote " and \\ slash'}], "a": "北京", "c": -7}
    s = Session(browser, portal, "helpers")
    s.page.goto(f"{portal.url}/#/signin")
    answer = s.page.evaluate(
        """async ([sample, csv]) => {
            const ui = await import("/portal/ui.js");
            const creditor = await import("/portal/pages/creditor.js");
            const auditor = await import("/portal/pages/auditor.js");
            return {
                money: [ui.money(185060000, "CNY"), ui.money(1850600, "JPY"), ui.money(1234, "KWD"),
                        ui.money("90071992547409930", "CNY")],
                minor: [String(ui.toMinor("1,850,600.00", "CNY")), String(ui.toMinor("1,850,600", "JPY")),
                        String(ui.toMinor("1.005", "CNY")), String(ui.toMinor("1.2.3", "CNY")),
                        String(ui.toMinor("0.50", "CNY"))],
                csv: creditor.parseCsv(csv),
                canonical: auditor.canonicalJson(sample),
            };
        }""",
        [sample, 'a,b\r\n"1,850,600.00","say ""hi"""\n\nx,"multi\nline"\n'],
    )
    assert answer["money"] == ["CNY 1,850,600.00", "JPY 1,850,600", "KWD 1.234", "CNY 900,719,925,474,099.30"]
    assert answer["minor"] == ["185060000", "1850600", "null", "null", "50"]
    assert answer["csv"] == [["a", "b"], ["1,850,600.00", 'say "hi"'], ["x", "multi\nline"]]
    assert answer["canonical"] == canonical_json(sample).decode()
    s.close()
