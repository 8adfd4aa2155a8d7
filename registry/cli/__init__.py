"""The ``registry`` command line (typer + rich): one sub-command group per workflow.

Every command reads the one settings object (environment ``REGISTRY_*`` or ``.env``) and exits
with a code scripts can trust: 0 success, 1 a refused or failed operation, 2 bad usage or setup.
Reads take ``--json`` (JSON only on stdout); writes sign with the user's keystore (``--as NAME``).
"""

from __future__ import annotations

import sys

import typer

from registry.cli import audit, finance, invoices, keys, participants, pay, stack
from registry.cli.stack import _ApiServer, indexer_config

__all__ = ["_ApiServer", "app", "indexer_config", "main"]

app = typer.Typer(
    help="Permissioned receivables registry: keys, invoices, financing, payments, participants, audit, "
    "and the local stack. Exit codes: 0 ok, 1 refused or failed, 2 usage or setup error.",
    no_args_is_help=True,
)
app.registered_commands.extend(stack.app.registered_commands)
app.add_typer(stack.chain_app, name="chain")
app.add_typer(stack.demo_app, name="demo")
app.add_typer(keys.app, name="keys")
app.add_typer(participants.app, name="participants")
app.add_typer(invoices.app, name="invoices")
app.add_typer(finance.app, name="finance")
app.add_typer(pay.app, name="pay")
app.add_typer(audit.app, name="audit")


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)
