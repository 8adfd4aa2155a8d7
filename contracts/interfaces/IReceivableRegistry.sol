// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IParticipantRegistry} from "./IParticipantRegistry.sol";

/// @title The receivables registry: registration, debtor confirmation (确权), assignment, split, payment.
/// @notice The vocabulary of the registry. A receivable is registered by its creditor against a debtor,
/// confirmed by that debtor only, assigned by its holder to factors, split, paid and settled. Every
/// transition is made by the party entitled to it and by no one else.
///
/// Double financing is impossible by construction: the invoice key (debtor + normalised invoice number)
/// and the fingerprint (all identifying fields) are derived on-chain, and each belongs to at most one
/// live registration, whoever registers. Only a registration cancelled before confirmation frees them.
/// A receivable has exactly one holder, who is also the debtor's payee of record: on this ledger an
/// assignment is registered and notified to the debtor in the same step.
///
/// Every state change folds its event into a running ledger hash:
/// `head = keccak256(abi.encode(prevHead, seq, topic0, keccak256(abi.encode(<all event fields in declaration order>))))`
/// so that anyone holding the logs can check that they saw every event, in order.
interface IReceivableRegistry is IParticipantRegistry {
    /// @notice Lifecycle of a receivable (see DOMAIN.md).
    enum Status {
        None, // 0: no such receivable
        Registered, // 1: registered by the creditor, awaiting the debtor's confirmation
        Confirmed, // 2: confirmed by the debtor; held by the creditor
        Disputed, // 3: disputed by the debtor before confirmation
        Assigned, // 4: assigned to a factor, who is the holder and payee of record
        PartiallyPaid, // 5: some of the face value has been paid
        Settled, // 6: paid in full (terminal)
        Cancelled, // 7: cancelled by the creditor before confirmation (terminal; frees key and fingerprint)
        Defaulted, // 8: declared in default by the holder after the due date
        WrittenOff, // 9: written off by the holder after default (terminal)
        Split // 10: unpaid balance divided into parts, each its own receivable (terminal for the parent)
    }

    /// @notice Why a debtor disputes an invoice.
    enum DisputeReason {
        None, // 0: not disputed
        GoodsNotReceived, // 1
        QualityDefect, // 2
        AmountIncorrect, // 3
        AlreadyPaid, // 4
        NotOurInvoice, // 5: the debtor never ordered this (suspected fraud)
        Other // 6
    }

    /// @notice How a dispute ended.
    enum DisputeResolution {
        None, // 0
        Withdrawn, // 1: the debtor withdrew the dispute; the receivable awaits confirmation again
        Upheld // 2: the creditor accepted the dispute; the registration is cancelled
    }

    /// @notice Lifecycle of a payment reported by the debtor.
    enum ClaimStatus {
        None, // 0: no such claim
        Pending, // 1: reported by the debtor, awaiting the payee's acknowledgement
        Acknowledged, // 2: acknowledged by the payee; counted against the receivable
        Rejected // 3: the payee says it did not receive it
    }

    /// @notice What a creditor supplies to register one invoice. Amounts are in the currency's minor unit.
    struct RegistrationInput {
        uint24 debtor;
        bytes32 invoiceNumberHash; // keccak256 of the normalised invoice number (registry/invoice.py)
        bytes3 currency; // ISO 4217 alphabetic code
        uint64 faceValue;
        uint32 issueDate; // unix seconds
        uint32 dueDate; // unix seconds
        bytes32 documentHash; // hash of the invoice document, kept off-chain
    }

    /// @notice The on-chain state of a receivable (one storage slot). Parties are entity ids.
    struct Receivable {
        uint24 creditor;
        uint24 debtor;
        uint24 holder; // the payee of record
        Status status;
        bool recourse; // the current holder may sell it back to the creditor
        uint32 dueDate;
        uint64 faceValue;
        uint64 paid;
    }

    /// @notice A payment reported by the debtor to the payee of record at that moment.
    struct PaymentClaim {
        uint64 receivableId;
        uint24 payee;
        ClaimStatus status;
        uint64 amount;
    }

    /// @notice Raised when a receivable id does not exist.
    error UnknownReceivable(uint64 id);
    /// @notice Raised when the caller's entity is not the creditor of the receivable.
    error NotCreditorOfRecord(uint64 id, uint24 caller);
    /// @notice Raised when the caller's entity is not the debtor of the receivable.
    error NotDebtorOfRecord(uint64 id, uint24 caller);
    /// @notice Raised when the caller's entity is not the holder of the receivable.
    error NotHolder(uint64 id, uint24 caller, uint24 holder);
    /// @notice Raised when an action is not allowed in the receivable's current status.
    error InvalidStatus(uint64 id, Status status);
    /// @notice Raised when the invoice key is held by a live registration.
    error InvoiceKeyTaken(bytes32 invoiceKey, uint64 existingId);
    /// @notice Raised when the fingerprint is held by a live registration.
    error FingerprintTaken(bytes32 fingerprint, uint64 existingId);
    /// @notice Raised when the debtor's own fingerprint does not match the registration.
    error FingerprintMismatch(uint64 id, bytes32 supplied);
    /// @notice Raised when the face value is zero.
    error ZeroAmount();
    /// @notice Raised when the face value exceeds the largest amount a mirror's signed 64-bit integers hold.
    error AmountTooLarge(uint64 faceValue, uint64 maximum);
    /// @notice Raised when the due date is not after the issue date.
    error DueDateNotAfterIssueDate(uint32 issueDate, uint32 dueDate);
    /// @notice Raised when the due date has already passed at registration.
    error DueDateInPast(uint32 dueDate, uint256 nowTimestamp);
    /// @notice Raised when the debtor and the creditor are the same entity.
    error DebtorIsCreditor(uint24 entityId);
    /// @notice Raised when the currency is not three upper-case ASCII letters.
    error InvalidCurrency(bytes3 currency);
    /// @notice Raised when the invoice number hash is empty.
    error EmptyInvoiceNumber();
    /// @notice Raised when a batch is empty or longer than the limit.
    error InvalidBatchSize(uint256 size, uint256 limit);
    /// @notice Raised when a receivable is assigned to its current holder, its debtor or its creditor.
    error InvalidAssignee(uint64 id, uint24 assignee);
    /// @notice Raised when the advance exceeds the unpaid balance.
    error AdvanceExceedsBalance(uint64 id, uint64 advance, uint64 unpaid);
    /// @notice Raised when a payment is zero or exceeds the unpaid balance.
    error PaymentExceedsBalance(uint64 id, uint64 amount, uint64 unpaid);
    /// @notice Raised when the debtor reports paying someone other than the payee of record.
    error PayeeNotOfRecord(uint64 id, uint24 paidTo, uint24 payeeOfRecord);
    /// @notice Raised when a payment claim does not exist.
    error UnknownPaymentClaim(uint64 claimId);
    /// @notice Raised when the caller is not the payee named in a payment claim.
    error NotPayeeOfClaim(uint64 claimId, uint24 caller, uint24 payee);
    /// @notice Raised when a payment claim is no longer pending.
    error ClaimNotPending(uint64 claimId, ClaimStatus status);
    /// @notice Raised when split parts do not add up to the unpaid balance.
    error SplitDoesNotConserve(uint64 id, uint256 sumOfParts, uint64 unpaid);
    /// @notice Raised when a split has fewer than two or too many parts, or a zero part.
    error InvalidSplit(uint64 id, uint256 parts);
    /// @notice Raised when default is declared before the due date has passed.
    error NotYetDue(uint64 id, uint32 dueDate, uint256 nowTimestamp);
    /// @notice Raised when a buy-back is attempted on a receivable assigned without recourse.
    error NoRecourse(uint64 id);
    /// @notice Raised when a dispute reason or resolution is `None` or out of range.
    error InvalidDisputeCode(uint8 code);

    /// @notice A receivable was registered. `supersedes` is the cancelled registration of the same
    /// invoice key or fingerprint that this one replaces (0 if none), linking a corrected re-registration.
    event ReceivableRegistered(
        uint64 indexed id,
        uint24 indexed creditor,
        uint24 indexed debtor,
        bytes32 fingerprint,
        bytes32 invoiceKey,
        bytes32 invoiceNumberHash,
        bytes3 currency,
        uint64 faceValue,
        uint32 issueDate,
        uint32 dueDate,
        bytes32 documentHash,
        uint64 supersedes
    );
    /// @notice A line of a batch registration was refused; `reason` is the ABI-encoded custom error that a
    /// single registration of the same line would have reverted with. Nothing changed for that line.
    event RegistrationRejected(uint24 indexed creditor, uint256 indexed line, bytes reason);
    /// @notice The debtor confirmed the receivable (确权).
    event ReceivableConfirmed(uint64 indexed id, uint24 debtor);
    /// @notice The debtor disputed the receivable before confirming it.
    event ReceivableDisputed(uint64 indexed id, uint24 indexed debtor, DisputeReason reason);
    /// @notice A dispute ended.
    event DisputeResolved(uint64 indexed id, uint24 indexed by, DisputeResolution resolution);
    /// @notice The creditor cancelled the registration before confirmation.
    event ReceivableCancelled(uint64 indexed id, uint24 indexed creditor);
    /// @notice The holder assigned the receivable; `to` is now holder and payee of record.
    event ReceivableAssigned(
        uint64 indexed id, uint24 indexed from, uint24 indexed to, uint64 advance, bool recourse, bytes32 termsHash
    );
    /// @notice The holder split the unpaid balance into parts, each a receivable with `id` as parent.
    event ReceivableSplit(uint64 indexed id, uint24 indexed holder, uint64[] partIds, uint64[] amounts);
    /// @notice The debtor reported paying `payee` (the payee of record at that moment).
    event PaymentReported(
        uint64 indexed claimId, uint64 indexed id, uint24 indexed payee, uint64 amount, bytes32 paymentRef
    );
    /// @notice The payee rejected a payment reported by the debtor.
    event PaymentRejected(uint64 indexed claimId, uint64 indexed id, uint24 indexed payee);
    /// @notice A payment was counted against the receivable. `claimId` is 0 when the payee recorded it directly.
    event PaymentRecorded(
        uint64 indexed id,
        uint24 indexed payee,
        uint64 indexed claimId,
        uint64 amount,
        uint64 paidTotal,
        Status status,
        bytes32 paymentRef
    );
    /// @notice The holder sold the receivable back to the creditor under recourse.
    event ReceivableBoughtBack(uint64 indexed id, uint24 indexed fromHolder, uint24 indexed creditor);
    /// @notice The holder declared the receivable in default after its due date.
    event ReceivableDefaulted(uint64 indexed id, uint24 indexed holder);
    /// @notice The holder wrote the defaulted receivable off.
    event ReceivableWrittenOff(uint64 indexed id, uint24 indexed holder);

    /// @notice Registers one invoice. Caller: a key of an active creditor entity.
    function register(RegistrationInput calldata input) external returns (uint64 id);

    /// @notice Registers many invoices. A refused line emits `RegistrationRejected` and the rest go on.
    /// @return ids the new id of each line, 0 for a refused line
    function registerBatch(RegistrationInput[] calldata inputs) external returns (uint64[] memory ids);

    /// @notice The debtor of record confirms, supplying the fingerprint computed from its own records.
    function confirm(uint64 id, bytes32 fingerprint) external;

    /// @notice The debtor of record disputes an unconfirmed receivable.
    function dispute(uint64 id, DisputeReason reason) external;

    /// @notice Ends a dispute: `Withdrawn` by the debtor, `Upheld` by the creditor (cancels the registration).
    function resolveDispute(uint64 id, DisputeResolution resolution) external;

    /// @notice The creditor cancels an unconfirmed (registered or disputed) receivable.
    function cancel(uint64 id) external;

    /// @notice The holder assigns (or re-assigns) the receivable to an admitted factor.
    function assign(uint64 id, uint24 factor, uint64 advance, bool recourse, bytes32 termsHash) external;

    /// @notice The holder divides the unpaid balance into parts that add up to it exactly.
    function split(uint64 id, uint64[] calldata amounts) external returns (uint64[] memory partIds);

    /// @notice The debtor reports a payment made to `paidTo`, which must be the payee of record now.
    function reportPayment(uint64 id, uint24 paidTo, uint64 amount, bytes32 paymentRef)
        external
        returns (uint64 claimId);

    /// @notice The payee named in a claim acknowledges it; the amount is counted against the receivable.
    function acknowledgePayment(uint64 claimId) external;

    /// @notice The payee named in a claim says it did not receive the payment.
    function rejectPayment(uint64 claimId) external;

    /// @notice The payee of record records a payment it received.
    function recordPayment(uint64 id, uint64 amount, bytes32 paymentRef) external;

    /// @notice The holder sells the receivable back to the creditor under the recourse agreed at assignment.
    function buyBack(uint64 id) external;

    /// @notice The holder declares the receivable in default after its due date.
    function declareDefault(uint64 id) external;

    /// @notice The holder writes off a defaulted receivable.
    function writeOff(uint64 id) external;

    /// @notice Stops every lifecycle action (admin only); participant administration goes on.
    function pause() external;

    /// @notice Resumes lifecycle actions (admin only).
    function unpause() external;

    /// @notice The state of a receivable.
    function getReceivable(uint64 id) external view returns (Receivable memory);

    /// @notice The parent of a split part (0 for an original registration).
    function parentOf(uint64 id) external view returns (uint64);

    /// @notice The registration currently holding an invoice key (0 if none; may be a cancelled one, whose
    /// hold has lapsed).
    function receivableIdByInvoiceKey(bytes32 invoiceKey) external view returns (uint64);

    /// @notice The registration currently holding a fingerprint (0 if none; may be a cancelled one).
    function receivableIdByFingerprint(bytes32 fingerprint) external view returns (uint64);

    /// @notice The payee of record: whom the debtor must pay now to be discharged.
    function payeeOfRecord(uint64 id) external view returns (uint24);

    /// @notice A payment claim.
    function getPaymentClaim(uint64 claimId) external view returns (PaymentClaim memory);

    /// @notice Number of receivables ever created (ids run from 1 to this number).
    function receivableCount() external view returns (uint64);

    /// @notice The running ledger hash and the number of events folded into it.
    function ledger() external view returns (bytes32 head, uint64 eventCount);

    /// @notice The invoice key the contract derives for `debtor` and a normalised invoice number hash.
    function invoiceKeyOf(uint24 debtor, bytes32 invoiceNumberHash) external pure returns (bytes32);

    /// @notice The fingerprint the contract derives for an invoice's identifying fields.
    function fingerprintOf(RegistrationInput calldata input) external pure returns (bytes32);
}
