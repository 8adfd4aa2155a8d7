// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";

/// @title Relays users' EIP-712 signed requests to the registry.
/// @notice OpenZeppelin's forwarder as is: per-signer nonces, deadlines, EIP-712 domain bound to this
/// chain and this contract, low-s signatures only (ECDSA). The relayer can neither alter nor replay a
/// request; the registry sees the signer as the caller.
contract RegistryForwarder is ERC2771Forwarder {
    constructor() ERC2771Forwarder("ReceivablesRegistryForwarder") {}
}
