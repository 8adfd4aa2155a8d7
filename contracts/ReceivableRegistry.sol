// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Context} from "@openzeppelin/contracts/utils/Context.sol";
import {ERC2771Context} from "@openzeppelin/contracts/metatx/ERC2771Context.sol";
import {IReceivableRegistry} from "./interfaces/IReceivableRegistry.sol";
import {ParticipantRegistry} from "./ParticipantRegistry.sol";

/// @title The receivables registry of the consortium.
/// @notice See {IReceivableRegistry} for the rules. Users act with their own transactions or through
/// EIP-712 requests relayed by the trusted {RegistryForwarder}; `_msgSender()` is the signer either way.
/// This contract deliberately has no Multicall: combined with ERC2771Context it would let a relayer
/// spoof senders (OpenZeppelin advisory, December 2023).
contract ReceivableRegistry is IReceivableRegistry, ParticipantRegistry, ERC2771Context {
    bytes32 public constant INVOICE_KEY_TYPEHASH = keccak256("InvoiceKey(uint24 debtor,bytes32 invoiceNumberHash)");
    bytes32 public constant FINGERPRINT_TYPEHASH = keccak256(
        "ReceivableFingerprint(uint24 debtor,bytes32 invoiceNumberHash,bytes3 currency,uint64 faceValue,uint32 issueDate,uint32 dueDate)"
    );

    /// @notice Most lines in one `registerBatch` call.
    uint256 public constant MAX_BATCH_SIZE = 500;
    /// @notice Most parts in one `split`.
    uint256 public constant MAX_SPLIT_PARTS = 32;
    /// @notice Largest face value: what signed 64-bit SQL integers (SQLite, PostgreSQL BIGINT) can mirror.
    uint64 public constant MAX_FACE_VALUE = uint64(uint256(int256(type(int64).max)));

    mapping(uint64 id => Receivable) private _receivables;
    mapping(uint64 id => uint64 parentId) private _parents;
    mapping(bytes32 invoiceKey => uint64 id) private _idByInvoiceKey;
    mapping(bytes32 fingerprint => uint64 id) private _idByFingerprint;
    mapping(uint64 claimId => PaymentClaim) private _claims;

    constructor(address admin, address trustedForwarder) ParticipantRegistry(admin) ERC2771Context(trustedForwarder) {}

    // ------------------------------------------------------------------ registration

    /// @inheritdoc IReceivableRegistry
    function register(RegistrationInput calldata input) external whenNotPaused returns (uint64 id) {
        uint24 creditor = _requireActorWithRole(CREDITOR_ROLE);
        bytes memory err;
        (id, err) = _register(input, creditor);
        // Id 0 is _register's "refused" sentinel, not a timestamp-derived quantity (a refusal may come from
        // the due-date check against block.timestamp, which is what slither's taint tracking sees).
        // slither-disable-next-line incorrect-equality
        if (id == 0) _revertWith(err);
    }

    /// @inheritdoc IReceivableRegistry
    function registerBatch(RegistrationInput[] calldata inputs) external whenNotPaused returns (uint64[] memory ids) {
        uint24 creditor = _requireActorWithRole(CREDITOR_ROLE);
        if (inputs.length == 0 || inputs.length > MAX_BATCH_SIZE) {
            revert InvalidBatchSize(inputs.length, MAX_BATCH_SIZE);
        }
        ids = new uint64[](inputs.length);
        for (uint256 line = 0; line < inputs.length; ++line) {
            bytes memory err;
            (ids[line], err) = _register(inputs[line], creditor);
            // A refused line changes nothing, so it is not folded into the ledger hash.
            // Id 0 is the "refused" sentinel (see register): a strict equality is exact here.
            // slither-disable-next-line incorrect-equality
            if (ids[line] == 0) emit RegistrationRejected(creditor, line, err);
        }
    }

    // ------------------------------------------------------------------ debtor

    /// @inheritdoc IReceivableRegistry
    function confirm(uint64 id, bytes32 fingerprint) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivables[id];
        (uint24 debtor, Status status) = (r.debtor, r.status);
        if (status == Status.None) revert UnknownReceivable(id);
        if (debtor != caller) revert NotDebtorOfRecord(id, caller);
        if (status != Status.Registered) revert InvalidStatus(id, status);
        if (_idByFingerprint[fingerprint] != id) revert FingerprintMismatch(id, fingerprint);
        r.status = Status.Confirmed;
        emit ReceivableConfirmed(id, caller);
        _fold(ReceivableConfirmed.selector, abi.encode(id, caller));
    }

    /// @inheritdoc IReceivableRegistry
    function dispute(uint64 id, DisputeReason reason) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.debtor != caller) revert NotDebtorOfRecord(id, caller);
        // Confirmation is irrevocable: after it, the debtor's defences do not stop the holder's claim.
        if (r.status != Status.Registered) revert InvalidStatus(id, r.status);
        if (reason == DisputeReason.None) revert InvalidDisputeCode(uint8(reason));
        r.status = Status.Disputed;
        emit ReceivableDisputed(id, caller, reason);
        _fold(ReceivableDisputed.selector, abi.encode(id, caller, reason));
    }

    /// @inheritdoc IReceivableRegistry
    function resolveDispute(uint64 id, DisputeResolution resolution) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (resolution == DisputeResolution.Withdrawn) {
            if (r.debtor != caller) revert NotDebtorOfRecord(id, caller);
        } else if (resolution == DisputeResolution.Upheld) {
            if (r.creditor != caller) revert NotCreditorOfRecord(id, caller);
        } else {
            revert InvalidDisputeCode(uint8(resolution));
        }
        if (r.status != Status.Disputed) revert InvalidStatus(id, r.status);
        emit DisputeResolved(id, caller, resolution);
        _fold(DisputeResolved.selector, abi.encode(id, caller, resolution));
        if (resolution == DisputeResolution.Withdrawn) {
            r.status = Status.Registered;
        } else {
            _cancel(id, r);
        }
    }

    /// @inheritdoc IReceivableRegistry
    function reportPayment(uint64 id, uint24 paidTo, uint64 amount, bytes32 paymentRef)
        external
        whenNotPaused
        returns (uint64 claimId)
    {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.debtor != caller) revert NotDebtorOfRecord(id, caller);
        _requirePayable(id, r);
        // After notice of assignment only a payment to the assignee discharges the debtor.
        if (paidTo != r.holder) revert PayeeNotOfRecord(id, paidTo, r.holder);
        uint64 unpaid = r.faceValue - r.paid;
        if (amount == 0 || amount > unpaid) revert PaymentExceedsBalance(id, amount, unpaid);
        claimId = ++_claimCount;
        _claims[claimId] = PaymentClaim({receivableId: id, payee: paidTo, status: ClaimStatus.Pending, amount: amount});
        emit PaymentReported(claimId, id, paidTo, amount, paymentRef);
        _fold(PaymentReported.selector, abi.encode(claimId, id, paidTo, amount, paymentRef));
    }

    // ------------------------------------------------------------------ creditor

    /// @inheritdoc IReceivableRegistry
    function cancel(uint64 id) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.creditor != caller) revert NotCreditorOfRecord(id, caller);
        if (r.status != Status.Registered && r.status != Status.Disputed) revert InvalidStatus(id, r.status);
        _cancel(id, r);
    }

    // ------------------------------------------------------------------ holder (creditor or factor)

    /// @inheritdoc IReceivableRegistry
    function assign(uint64 id, uint24 factor, uint64 advance, bool recourse, bytes32 termsHash)
        external
        whenNotPaused
    {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.holder != caller) revert NotHolder(id, caller, r.holder);
        Status status = r.status;
        if (status != Status.Confirmed && status != Status.Assigned && status != Status.PartiallyPaid) {
            revert InvalidStatus(id, status);
        }
        if (factor == caller || factor == r.debtor || factor == r.creditor) revert InvalidAssignee(id, factor);
        bytes memory err = _entityRoleError(factor, FACTOR_ROLE);
        if (err.length != 0) _revertWith(err);
        uint64 unpaid = r.faceValue - r.paid;
        if (advance > unpaid) revert AdvanceExceedsBalance(id, advance, unpaid);
        r.holder = factor;
        r.recourse = recourse;
        if (status == Status.Confirmed) r.status = Status.Assigned;
        emit ReceivableAssigned(id, caller, factor, advance, recourse, termsHash);
        _fold(ReceivableAssigned.selector, abi.encode(id, caller, factor, advance, recourse, termsHash));
    }

    /// @inheritdoc IReceivableRegistry
    function split(uint64 id, uint64[] calldata amounts) external whenNotPaused returns (uint64[] memory partIds) {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.holder != caller) revert NotHolder(id, caller, r.holder);
        Status status = r.status;
        if (status != Status.Confirmed && status != Status.Assigned && status != Status.PartiallyPaid) {
            revert InvalidStatus(id, status);
        }
        if (amounts.length < 2 || amounts.length > MAX_SPLIT_PARTS) revert InvalidSplit(id, amounts.length);
        uint64 unpaid = r.faceValue - r.paid;
        // Solidity zero-initialises locals: the sum starts at 0 on purpose.
        // slither-disable-next-line uninitialized-local
        uint256 sum;
        for (uint256 i = 0; i < amounts.length; ++i) {
            if (amounts[i] == 0) revert InvalidSplit(id, amounts.length);
            sum += amounts[i];
        }
        if (sum != unpaid) revert SplitDoesNotConserve(id, sum, unpaid);

        Receivable memory part = r;
        part.status = part.holder == part.creditor ? Status.Confirmed : Status.Assigned;
        part.paid = 0;
        partIds = new uint64[](amounts.length);
        uint64 next = _receivableCount;
        for (uint256 i = 0; i < amounts.length; ++i) {
            uint64 partId = ++next;
            part.faceValue = amounts[i];
            _receivables[partId] = part;
            _parents[partId] = id;
            partIds[i] = partId;
        }
        _receivableCount = next;
        r.status = Status.Split;
        emit ReceivableSplit(id, caller, partIds, amounts);
        _fold(ReceivableSplit.selector, abi.encode(id, caller, partIds, amounts));
    }

    /// @inheritdoc IReceivableRegistry
    function buyBack(uint64 id) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.holder != caller) revert NotHolder(id, caller, r.holder);
        Status status = r.status;
        if (status != Status.Assigned && status != Status.PartiallyPaid && status != Status.Defaulted) {
            revert InvalidStatus(id, status);
        }
        if (!r.recourse) revert NoRecourse(id);
        uint24 creditor = r.creditor;
        r.holder = creditor;
        r.recourse = false;
        r.status = r.paid == 0 ? Status.Confirmed : Status.PartiallyPaid;
        emit ReceivableBoughtBack(id, caller, creditor);
        _fold(ReceivableBoughtBack.selector, abi.encode(id, caller, creditor));
    }

    /// @inheritdoc IReceivableRegistry
    function declareDefault(uint64 id) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.holder != caller) revert NotHolder(id, caller, r.holder);
        Status status = r.status;
        if (status != Status.Confirmed && status != Status.Assigned && status != Status.PartiallyPaid) {
            revert InvalidStatus(id, status);
        }
        if (block.timestamp <= r.dueDate) revert NotYetDue(id, r.dueDate, block.timestamp);
        r.status = Status.Defaulted;
        emit ReceivableDefaulted(id, caller);
        _fold(ReceivableDefaulted.selector, abi.encode(id, caller));
    }

    /// @inheritdoc IReceivableRegistry
    function writeOff(uint64 id) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.holder != caller) revert NotHolder(id, caller, r.holder);
        if (r.status != Status.Defaulted) revert InvalidStatus(id, r.status);
        r.status = Status.WrittenOff;
        emit ReceivableWrittenOff(id, caller);
        _fold(ReceivableWrittenOff.selector, abi.encode(id, caller));
    }

    // ------------------------------------------------------------------ payee of record

    /// @inheritdoc IReceivableRegistry
    function recordPayment(uint64 id, uint64 amount, bytes32 paymentRef) external whenNotPaused {
        uint24 caller = _requireActor();
        Receivable storage r = _receivable(id);
        if (r.holder != caller) revert NotHolder(id, caller, r.holder);
        _requirePayable(id, r);
        _applyPayment(id, r, caller, amount, 0, paymentRef);
    }

    /// @inheritdoc IReceivableRegistry
    function acknowledgePayment(uint64 claimId) external whenNotPaused {
        uint24 caller = _requireActor();
        PaymentClaim storage claim = _pendingClaim(claimId, caller);
        uint64 id = claim.receivableId;
        Receivable storage r = _receivables[id];
        // The payment discharged the debtor when it was made to the then payee of record, even if the
        // receivable has been assigned since; it still counts against the receivable now.
        _requirePayable(id, r);
        claim.status = ClaimStatus.Acknowledged;
        _applyPayment(id, r, caller, claim.amount, claimId, bytes32(0));
    }

    /// @inheritdoc IReceivableRegistry
    function rejectPayment(uint64 claimId) external whenNotPaused {
        uint24 caller = _requireActor();
        PaymentClaim storage claim = _pendingClaim(claimId, caller);
        claim.status = ClaimStatus.Rejected;
        emit PaymentRejected(claimId, claim.receivableId, caller);
        _fold(PaymentRejected.selector, abi.encode(claimId, claim.receivableId, caller));
    }

    // ------------------------------------------------------------------ admin

    /// @inheritdoc IReceivableRegistry
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
        _fold(Paused.selector, abi.encode(_msgSender()));
    }

    /// @inheritdoc IReceivableRegistry
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
        _fold(Unpaused.selector, abi.encode(_msgSender()));
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IReceivableRegistry
    function getReceivable(uint64 id) external view returns (Receivable memory) {
        return _receivables[id];
    }

    /// @inheritdoc IReceivableRegistry
    function parentOf(uint64 id) external view returns (uint64) {
        return _parents[id];
    }

    /// @inheritdoc IReceivableRegistry
    function receivableIdByInvoiceKey(bytes32 invoiceKey) external view returns (uint64) {
        return _idByInvoiceKey[invoiceKey];
    }

    /// @inheritdoc IReceivableRegistry
    function receivableIdByFingerprint(bytes32 fingerprint) external view returns (uint64) {
        return _idByFingerprint[fingerprint];
    }

    /// @inheritdoc IReceivableRegistry
    function payeeOfRecord(uint64 id) external view returns (uint24) {
        return _receivables[id].holder;
    }

    /// @inheritdoc IReceivableRegistry
    function getPaymentClaim(uint64 claimId) external view returns (PaymentClaim memory) {
        return _claims[claimId];
    }

    /// @inheritdoc IReceivableRegistry
    function receivableCount() external view returns (uint64) {
        return _receivableCount;
    }

    /// @inheritdoc IReceivableRegistry
    function ledger() external view returns (bytes32 head, uint64 eventCount) {
        return _ledger();
    }

    /// @inheritdoc IReceivableRegistry
    function invoiceKeyOf(uint24 debtor, bytes32 invoiceNumberHash) public pure returns (bytes32) {
        return keccak256(abi.encode(INVOICE_KEY_TYPEHASH, debtor, invoiceNumberHash));
    }

    /// @inheritdoc IReceivableRegistry
    function fingerprintOf(RegistrationInput calldata input) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                FINGERPRINT_TYPEHASH,
                input.debtor,
                input.invoiceNumberHash,
                input.currency,
                input.faceValue,
                input.issueDate,
                input.dueDate
            )
        );
    }

    // ------------------------------------------------------------------ internals

    /// @dev Registers one line, or returns (0, the custom error it would revert with). Every rule of
    /// registration lives here, so single and batch registration cannot drift apart.
    function _register(RegistrationInput calldata input, uint24 creditor)
        private
        returns (uint64 id, bytes memory err)
    {
        err = _registrationError(input, creditor);
        if (err.length != 0) return (0, err);
        bytes32 key = invoiceKeyOf(input.debtor, input.invoiceNumberHash);
        bytes32 fingerprint = fingerprintOf(input);
        uint64 supersedes;
        (supersedes, err) = _claimableBy(key, fingerprint);
        if (err.length != 0) return (0, err);

        id = ++_receivableCount;
        _idByInvoiceKey[key] = id;
        _idByFingerprint[fingerprint] = id;
        _receivables[id] = Receivable({
            creditor: creditor,
            debtor: input.debtor,
            holder: creditor,
            status: Status.Registered,
            recourse: false,
            dueDate: input.dueDate,
            faceValue: input.faceValue,
            paid: 0
        });
        _emitRegistered(id, creditor, input, fingerprint, key, supersedes);
    }

    function _registrationError(RegistrationInput calldata input, uint24 creditor)
        private
        view
        returns (bytes memory)
    {
        if (input.faceValue == 0) return abi.encodeWithSelector(ZeroAmount.selector);
        if (input.faceValue > MAX_FACE_VALUE) {
            return abi.encodeWithSelector(AmountTooLarge.selector, input.faceValue, MAX_FACE_VALUE);
        }
        if (input.dueDate <= input.issueDate) {
            return abi.encodeWithSelector(DueDateNotAfterIssueDate.selector, input.issueDate, input.dueDate);
        }
        if (input.dueDate <= block.timestamp) {
            return abi.encodeWithSelector(DueDateInPast.selector, input.dueDate, block.timestamp);
        }
        if (input.invoiceNumberHash == bytes32(0)) return abi.encodeWithSelector(EmptyInvoiceNumber.selector);
        if (!_isCurrencyCode(input.currency)) return abi.encodeWithSelector(InvalidCurrency.selector, input.currency);
        if (input.debtor == creditor) return abi.encodeWithSelector(DebtorIsCreditor.selector, creditor);
        return _entityRoleError(input.debtor, DEBTOR_ROLE);
    }

    /// @dev Whether the key and fingerprint are free: unused, or held by a cancelled registration,
    /// which the new one then supersedes.
    function _claimableBy(bytes32 key, bytes32 fingerprint) private view returns (uint64 supersedes, bytes memory) {
        uint64 holderOfKey = _idByInvoiceKey[key];
        if (holderOfKey != 0) {
            if (_receivables[holderOfKey].status != Status.Cancelled) {
                return (0, abi.encodeWithSelector(InvoiceKeyTaken.selector, key, holderOfKey));
            }
            supersedes = holderOfKey;
        }
        uint64 holderOfFingerprint = _idByFingerprint[fingerprint];
        if (holderOfFingerprint != 0) {
            if (_receivables[holderOfFingerprint].status != Status.Cancelled) {
                return (0, abi.encodeWithSelector(FingerprintTaken.selector, fingerprint, holderOfFingerprint));
            }
            if (supersedes == 0) supersedes = holderOfFingerprint;
        }
        return (supersedes, "");
    }

    function _emitRegistered(
        uint64 id,
        uint24 creditor,
        RegistrationInput calldata input,
        bytes32 fingerprint,
        bytes32 key,
        uint64 supersedes
    ) private {
        emit ReceivableRegistered(
            id,
            creditor,
            input.debtor,
            fingerprint,
            key,
            input.invoiceNumberHash,
            input.currency,
            input.faceValue,
            input.issueDate,
            input.dueDate,
            input.documentHash,
            supersedes
        );
        _fold(
            ReceivableRegistered.selector,
            bytes.concat(
                abi.encode(id, creditor, input.debtor, fingerprint, key, input.invoiceNumberHash),
                abi.encode(input.currency, input.faceValue, input.issueDate, input.dueDate, input.documentHash),
                abi.encode(supersedes)
            )
        );
    }

    function _cancel(uint64 id, Receivable storage r) private {
        // The key and fingerprint stay mapped to this id; a cancelled holder no longer blocks them
        // (see _claimableBy), and the next registration of the invoice records that it supersedes this one.
        r.status = Status.Cancelled;
        emit ReceivableCancelled(id, r.creditor);
        _fold(ReceivableCancelled.selector, abi.encode(id, r.creditor));
    }

    function _applyPayment(
        uint64 id,
        Receivable storage r,
        uint24 payee,
        uint64 amount,
        uint64 claimId,
        bytes32 paymentRef
    ) private {
        uint64 unpaid = r.faceValue - r.paid;
        if (amount == 0 || amount > unpaid) revert PaymentExceedsBalance(id, amount, unpaid);
        uint64 paidTotal = r.paid + amount;
        Status status = paidTotal == r.faceValue ? Status.Settled : Status.PartiallyPaid;
        // A defaulted receivable stays defaulted until fully recovered.
        if (status == Status.PartiallyPaid && r.status == Status.Defaulted) status = Status.Defaulted;
        r.paid = paidTotal;
        r.status = status;
        emit PaymentRecorded(id, payee, claimId, amount, paidTotal, status, paymentRef);
        _fold(PaymentRecorded.selector, abi.encode(id, payee, claimId, amount, paidTotal, status, paymentRef));
    }

    function _receivable(uint64 id) private view returns (Receivable storage r) {
        r = _receivables[id];
        if (r.status == Status.None) revert UnknownReceivable(id);
    }

    function _requirePayable(uint64 id, Receivable storage r) private view {
        Status status = r.status;
        if (
            status != Status.Confirmed && status != Status.Assigned && status != Status.PartiallyPaid
                && status != Status.Defaulted
        ) revert InvalidStatus(id, status);
    }

    function _pendingClaim(uint64 claimId, uint24 caller) private view returns (PaymentClaim storage claim) {
        claim = _claims[claimId];
        if (claim.status == ClaimStatus.None) revert UnknownPaymentClaim(claimId);
        if (claim.payee != caller) revert NotPayeeOfClaim(claimId, caller, claim.payee);
        if (claim.status != ClaimStatus.Pending) revert ClaimNotPending(claimId, claim.status);
    }

    function _isCurrencyCode(bytes3 code) private pure returns (bool) {
        for (uint256 i = 0; i < 3; ++i) {
            bytes1 c = code[i];
            if (c < 0x41 || c > 0x5A) return false;
        }
        return true;
    }

    // ------------------------------------------------------------------ ERC-2771 plumbing

    function _msgSender() internal view override(Context, ERC2771Context) returns (address) {
        return ERC2771Context._msgSender();
    }

    function _msgData() internal view override(Context, ERC2771Context) returns (bytes calldata) {
        return ERC2771Context._msgData();
    }

    function _contextSuffixLength() internal view override(Context, ERC2771Context) returns (uint256) {
        return ERC2771Context._contextSuffixLength();
    }
}
