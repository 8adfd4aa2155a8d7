"""Named domain types shared across the package (web3's ``Wei`` style)."""

from typing import NewType

MinorUnits = NewType("MinorUnits", int)
"""An amount in the currency's minor unit (fen, cents, fils); never a float."""

EntityId = NewType("EntityId", int)
"""A participant (legal entity) id as assigned by the on-chain participant registry."""

ReceivableId = NewType("ReceivableId", int)
"""A receivable id as assigned by the on-chain registry (sequential, starting at 1)."""

UnixTime = NewType("UnixTime", int)
"""Seconds since the epoch, UTC; fits the contract's uint32 dates."""
