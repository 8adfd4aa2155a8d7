"""API mode: sign in with the user's key, writes prepared by the API and signed here, reads over HTTP.

The CLI never signs what it did not ask for: the prepared request must call the registry of ``/meta``
through its forwarder, from the user's address, with no value, and carry exactly the calldata that
``registry.actions.build_call`` gives locally for the same arguments (ABI from the compiler artifacts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.signers.local import LocalAccount

from registry.cli._common import CliError, raise_on_problem

TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@cache
def _registry_abi() -> Any:
    from registry.chain.abi import ContractAbi
    from registry.chain.compiler import artifact

    return ContractAbi(artifact("ReceivableRegistry").abi)


def http_client(url: str) -> httpx.Client:
    """The HTTP client of API mode (tests replace this factory)."""
    return httpx.Client(base_url=url, timeout=TIMEOUT)


class ApiBackend:
    mode = "api"

    def __init__(self, url: str, account: LocalAccount) -> None:
        self.url = url
        self.account = account
        self.http = http_client(url)
        self._token: str | None = None
        self._principal: dict[str, Any] = {}
        self._meta: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ HTTP

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.sign_in()}"} if auth else {}
        response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:200]}
            raise_on_problem(response.status_code, body if isinstance(body, dict) else {"detail": str(body)})
        return response

    def _json(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        return self._send(method, path, auth=auth, **kwargs).json()

    def sign_in(self) -> str:
        """EIP-4361: the API's challenge signed with personal_sign; a bearer token for this process."""
        if self._token is None:
            challenge = self._json("POST", "/auth/challenge", auth=False, json={"address": self.account.address})
            signature = self.account.sign_message(encode_defunct(text=challenge["message"])).signature
            session = self._json(
                "POST",
                "/auth/session",
                auth=False,
                json={"message": challenge["message"], "signature": "0x" + bytes(signature).hex()},
            )
            self._token = str(session["token"])
            self._principal = dict(session.get("principal") or {})
        return self._token

    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = dict(self._json("GET", "/meta", auth=False))
        return self._meta

    def address(self) -> str:
        return str(self.account.address)

    def entity(self) -> int | None:
        self.sign_in()
        entity = self._principal.get("entity")
        return int(entity) if entity is not None else None

    # ------------------------------------------------------------------ writes

    def write(self, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
        from registry.actions import build_call

        call = build_call(action, args)  # bad input stops here, before anything is sent
        expected = "0x" + _registry_abi().encode_call(call.function, call.args).hex()
        prepared = self._json("POST", f"/actions/{action}/prepare", json={"args": dict(args)})
        typed = prepared["typed_data"]
        self._check_prepared(typed, expected, call.function, prepared.get("function"))
        signed = Account.sign_message(encode_typed_data(full_message=typed), self.account.key)
        body = {**typed["message"], "signature": "0x" + bytes(signed.signature).hex()}
        result = dict(self._json("POST", f"/actions/{action}", json=body))
        result.setdefault("summary", prepared.get("summary", call.summary))
        return result

    def _check_prepared(self, typed: Mapping[str, Any], expected_data: str, function: str, named: Any) -> None:
        meta = self.meta()
        message = typed.get("message", {})
        domain = typed.get("domain", {})
        problems = []
        if named != function:
            problems.append(f"the API prepared {named}, not {function}")
        if typed.get("primaryType") != "ForwardRequest":
            problems.append("not a ForwardRequest")
        if str(message.get("data", "")).lower() != expected_data.lower():
            problems.append("its calldata differs from the call built locally from your arguments")
        if str(message.get("from", "")).lower() != self.account.address.lower():
            problems.append(f"it is from {message.get('from')}, not your address {self.account.address}")
        if str(message.get("to", "")).lower() != str(meta.get("registry", "")).lower():
            problems.append(f"it targets {message.get('to')}, not the registry {meta.get('registry')}")
        if message.get("value") != 0:
            problems.append("it carries value")
        if str(domain.get("verifyingContract", "")).lower() != str(meta.get("forwarder", "")).lower():
            problems.append("its EIP-712 domain is not the registry's forwarder")
        if domain.get("chainId") != meta.get("chain_id"):
            problems.append("its EIP-712 domain is for another chain")
        if problems:
            raise CliError(
                "refusing to sign the request the API prepared: " + "; ".join(problems),
                1,
                "the API may be misconfigured or compromised: check --api and `registry chain status`",
            )

    # ------------------------------------------------------------------ reads

    def receivables(self, filters: Mapping[str, Any], limit: int) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v not in (None, False)}
        items: list[dict[str, Any]] = []
        page: dict[str, Any] = {}
        cursor: str | None = None
        while len(items) < limit:
            size = min(200, limit - len(items))
            query = {**params, "limit": size, **({"cursor": cursor} if cursor else {})}
            page = dict(self._json("GET", "/receivables", params=query))
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return {"items": items[:limit], "next_cursor": cursor, "as_of": page.get("as_of")}

    def receivable(self, receivable_id: int, block: int | None = None) -> dict[str, Any]:
        params = {} if block is None else {"block": block}
        return dict(self._json("GET", f"/receivables/{receivable_id}", params=params))

    def payee(self, receivable_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/receivables/{receivable_id}/payee"))

    def priority(self, invoice_key: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/priority/{invoice_key}"))

    def check(self, invoices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if len(invoices) == 1:
            try:
                return [dict(self._json("POST", "/checks", json={"invoice": dict(invoices[0])}))]
            except CliError as exc:
                if exc.code != 2:
                    raise
                return [{"error": {"field": "invoice", "message": exc.message}, "near_duplicates": []}]
        body = self._json("POST", "/checks/bulk", json={"invoices": [dict(i) for i in invoices]})
        return [dict(r) for r in body["results"]]

    def certificate(self, *, invoice_key: str | None, fingerprint: str | None) -> bytes:
        body = {"invoice_key": invoice_key} if invoice_key else {"fingerprint": fingerprint}
        return self._send("POST", "/certificates", json=body).content
