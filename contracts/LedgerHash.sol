// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title Running hash over every state-changing event of the registry.
/// @notice `head = keccak256(abi.encode(prevHead, seq, topic0, keccak256(abi.encode(<event fields>))))`,
/// where `seq` counts folded events from 1 and the event fields are all of the event's fields,
/// indexed or not, in declaration order. A mirror that recomputes the same head from the logs has
/// seen every event, in order.
abstract contract LedgerHash is Pausable {
    // The counters below share one storage slot with Pausable's `_paused` flag: every lifecycle call
    // checks the flag and then bumps the event counter, so both cost a single cold read.
    uint64 private _eventCount;
    /// @dev Receivable ids run from 1 to this number.
    uint64 internal _receivableCount;
    /// @dev Payment claim ids run from 1 to this number.
    uint64 internal _claimCount;
    bytes32 private _head;

    /// @dev Folds one emitted event into the ledger hash. Call it right after the `emit`, with the
    /// event's selector and `abi.encode` of all its fields in declaration order.
    function _fold(bytes32 topic0, bytes memory fields) internal {
        uint64 seq;
        unchecked {
            seq = _eventCount + 1; // 2^64 events will not happen
        }
        _head = keccak256(abi.encode(_head, seq, topic0, keccak256(fields)));
        _eventCount = seq;
    }

    function _ledger() internal view returns (bytes32 head, uint64 eventCount) {
        return (_head, _eventCount);
    }
}
