// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IReceivableRegistry} from "../interfaces/IReceivableRegistry.sol";
import {ReceivableRegistry} from "../ReceivableRegistry.sol";
import {RegistryForwarder} from "../RegistryForwarder.sol";

/// @dev The few Foundry cheatcodes these tests use (forge-std is not available offline).
interface Vm {
    function prank(address sender) external;
    function warp(uint256 timestamp) external;
}

/// @dev Foundry's invariant target selection (what forge-std's StdInvariant declares).
struct FuzzSelector {
    address addr;
    bytes4[] selectors;
}

Vm constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @notice Drives the registry through its lifecycle as the consortium's parties would: every call is
/// made by a key of the party it names (and sometimes by the wrong one), with inputs drawn from small
/// pools so that duplicates, wrong states and over-payments are frequent. Refusals are expected and
/// swallowed; the invariants below must hold whatever sequence the fuzzer picks.
contract RegistryHandler {
    ReceivableRegistry public immutable registry;

    uint24[] internal creditors;
    uint24[] internal debtors;
    uint24[] internal factors;
    mapping(uint24 entity => address key) public keyOf;

    /// @dev Ids created by registration (split parts carry no invoice key), with what was registered.
    uint64[] public registeredIds;
    mapping(uint64 id => IReceivableRegistry.RegistrationInput) internal inputOf;
    uint64[] internal pendingClaims;

    // Ledger observations after every handler call.
    uint64 public lastEventCount;
    bytes32 public lastHead;
    bool public ledgerWentBack;
    bool public headChangedWithoutEvent;
    bool public eventWithoutHeadChange;
    /// @dev Set if an action the rules refuse went through (wrong party, advance over the balance).
    bool public forbiddenActionSucceeded;

    uint256 public successes;

    // Sets of statuses (a bit per status) that an action needs.
    uint256 internal constant REGISTERED = 1 << uint8(IReceivableRegistry.Status.Registered);
    uint256 internal constant DISPUTED = 1 << uint8(IReceivableRegistry.Status.Disputed);
    uint256 internal constant CANCELLABLE = REGISTERED | DISPUTED;
    uint256 internal constant LIVE_UNPAID = (1 << uint8(IReceivableRegistry.Status.Confirmed))
        | (1 << uint8(IReceivableRegistry.Status.Assigned)) | (1 << uint8(IReceivableRegistry.Status.PartiallyPaid));
    uint256 internal constant PAYABLE = LIVE_UNPAID | (1 << uint8(IReceivableRegistry.Status.Defaulted));
    uint256 internal constant WITH_RECOURSE = (1 << uint8(IReceivableRegistry.Status.Assigned))
        | (1 << uint8(IReceivableRegistry.Status.PartiallyPaid)) | (1 << uint8(IReceivableRegistry.Status.Defaulted));

    constructor(ReceivableRegistry registry_) {
        registry = registry_;
    }

    function addParty(uint24 entity, address key, bytes32 role) external {
        keyOf[entity] = key;
        if (role == registry.CREDITOR_ROLE()) creditors.push(entity);
        else if (role == registry.DEBTOR_ROLE()) debtors.push(entity);
        else factors.push(entity);
        (lastHead, lastEventCount) = registry.ledger();
    }

    modifier observesLedger() {
        _;
        (bytes32 head, uint64 count) = registry.ledger();
        if (count < lastEventCount) ledgerWentBack = true;
        if (count == lastEventCount && head != lastHead) headChangedWithoutEvent = true;
        if (count > lastEventCount && head == lastHead) eventWithoutHeadChange = true;
        (lastHead, lastEventCount) = (head, count);
    }

    // ------------------------------------------------------------------ actions

    function register(uint256 creditorSeed, uint256 debtorSeed, uint256 numberSeed, uint64 amount, uint16 days_)
        external
        observesLedger
    {
        uint24 creditor = creditors[creditorSeed % creditors.length];
        IReceivableRegistry.RegistrationInput memory input = _input(debtorSeed, numberSeed, amount, days_);
        VM.prank(keyOf[creditor]);
        try registry.register(input) returns (uint64 id) {
            _remember(id, input);
        } catch {}
    }

    function registerBatch(uint256 creditorSeed, uint256 seed, uint8 lines) external observesLedger {
        uint24 creditor = creditors[creditorSeed % creditors.length];
        uint256 n = 1 + lines % 6;
        IReceivableRegistry.RegistrationInput[] memory inputs = new IReceivableRegistry.RegistrationInput[](n);
        for (uint256 i = 0; i < n; ++i) {
            uint256 s = uint256(keccak256(abi.encode(seed, i)));
            inputs[i] = _input(s, s >> 64, uint64(s >> 128), uint16(s >> 192));
        }
        VM.prank(keyOf[creditor]);
        try registry.registerBatch(inputs) returns (uint64[] memory ids) {
            for (uint256 i = 0; i < n; ++i) {
                if (ids[i] != 0) _remember(ids[i], inputs[i]);
            }
        } catch {}
    }

    function confirm(uint256 idSeed, uint8 who) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, REGISTERED);
        if (id == 0) return;
        bytes32 fingerprint = registry.fingerprintOf(inputOf[_root(id)]);
        bool asDebtor = who % 8 != 0; // now and then the creditor tries to confirm its own invoice
        VM.prank(asDebtor ? keyOf[r.debtor] : keyOf[r.creditor]);
        try registry.confirm(id, fingerprint) {
            if (!asDebtor) forbiddenActionSucceeded = true;
            successes++;
        } catch {}
    }

    function dispute(uint256 idSeed, uint8 reason) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, REGISTERED);
        if (id == 0) return;
        VM.prank(keyOf[r.debtor]);
        try registry.dispute(id, IReceivableRegistry.DisputeReason(1 + reason % 6)) {
            successes++;
        } catch {}
    }

    function resolveDispute(uint256 idSeed, bool upheld) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, DISPUTED);
        if (id == 0) return;
        VM.prank(upheld ? keyOf[r.creditor] : keyOf[r.debtor]);
        try registry.resolveDispute(
            id, upheld ? IReceivableRegistry.DisputeResolution.Upheld : IReceivableRegistry.DisputeResolution.Withdrawn
        ) {
            successes++;
        } catch {}
    }

    function cancel(uint256 idSeed) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, CANCELLABLE);
        if (id == 0) return;
        VM.prank(keyOf[r.creditor]);
        try registry.cancel(id) {
            successes++;
        } catch {}
    }

    function assign(uint256 idSeed, uint256 factorSeed, uint64 advance, bool recourse) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, LIVE_UNPAID);
        if (id == 0) return;
        uint24 factor = factors[factorSeed % factors.length];
        uint64 unpaid = r.faceValue - r.paid;
        advance = unpaid == 0 ? 0 : advance % (unpaid + unpaid / 8 + 1); // sometimes more than the balance
        VM.prank(keyOf[r.holder]);
        try registry.assign(id, factor, advance, recourse, keccak256("terms")) {
            if (advance > unpaid) forbiddenActionSucceeded = true;
            successes++;
        } catch {}
    }

    function recordPayment(uint256 idSeed, uint64 amount) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, PAYABLE);
        if (id == 0) return;
        amount = _amountAround(r, amount);
        VM.prank(keyOf[r.holder]);
        try registry.recordPayment(id, amount, keccak256(abi.encode("bank-ref", id, amount))) {
            successes++;
        } catch {}
    }

    function reportPayment(uint256 idSeed, uint64 amount) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, PAYABLE);
        if (id == 0) return;
        amount = _amountAround(r, amount);
        VM.prank(keyOf[r.debtor]);
        try registry.reportPayment(id, r.holder, amount, keccak256(abi.encode("debtor-ref", id))) returns (
            uint64 claimId
        ) {
            pendingClaims.push(claimId);
        } catch {}
    }

    function settleClaim(uint256 claimSeed, bool acknowledge) external observesLedger {
        if (pendingClaims.length == 0) return;
        uint256 index = claimSeed % pendingClaims.length;
        uint64 claimId = pendingClaims[index];
        pendingClaims[index] = pendingClaims[pendingClaims.length - 1];
        pendingClaims.pop();
        address payee = keyOf[registry.getPaymentClaim(claimId).payee];
        VM.prank(payee);
        if (acknowledge) {
            try registry.acknowledgePayment(claimId) {
                successes++;
            } catch {}
        } else {
            try registry.rejectPayment(claimId) {
                successes++;
            } catch {}
        }
    }

    function split(uint256 idSeed, uint8 parts, uint256 seed) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, LIVE_UNPAID);
        if (id == 0) return;
        uint64 unpaid = r.faceValue - r.paid;
        uint256 n = 2 + parts % 3;
        if (unpaid < n) return;
        uint64[] memory amounts = new uint64[](n);
        uint64 left = unpaid;
        for (uint256 i = 0; i + 1 < n; ++i) {
            uint64 room = left - uint64(n - 1 - i); // leave at least 1 for each later part
            amounts[i] = 1 + uint64(uint256(keccak256(abi.encode(seed, i))) % room);
            left -= amounts[i];
        }
        amounts[n - 1] = left;
        VM.prank(keyOf[r.holder]);
        try registry.split(id, amounts) {
            successes++;
        } catch {}
    }

    function buyBack(uint256 idSeed) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, WITH_RECOURSE);
        if (id == 0) return;
        VM.prank(keyOf[r.holder]);
        try registry.buyBack(id) {
            successes++;
        } catch {}
    }

    function declareDefault(uint256 idSeed) external observesLedger {
        (uint64 id, IReceivableRegistry.Receivable memory r) = _pick(idSeed, LIVE_UNPAID);
        if (id == 0) return;
        VM.prank(keyOf[r.holder]);
        try registry.declareDefault(id) {
            successes++;
        } catch {}
    }

    function passTime(uint32 secondsForward) external observesLedger {
        VM.warp(block.timestamp + secondsForward % (120 days));
    }

    // ------------------------------------------------------------------ views for the invariants

    function registeredCount() external view returns (uint256) {
        return registeredIds.length;
    }

    function registeredInput(uint64 id) external view returns (IReceivableRegistry.RegistrationInput memory) {
        return inputOf[id];
    }

    // ------------------------------------------------------------------ helpers

    function _input(uint256 debtorSeed, uint256 numberSeed, uint64 amount, uint16 days_)
        internal
        view
        returns (IReceivableRegistry.RegistrationInput memory)
    {
        uint32 issue = uint32(block.timestamp);
        return IReceivableRegistry.RegistrationInput({
            debtor: debtors[debtorSeed % debtors.length],
            // A small pool of invoice numbers: the same invoice is often registered again.
            invoiceNumberHash: keccak256(abi.encodePacked("INV-", numberSeed % 12)),
            currency: "CNY",
            faceValue: 1 + amount % 1_000_000_00,
            issueDate: issue,
            dueDate: issue + 1 days + uint32(days_ % 90) * 1 days,
            documentHash: keccak256(abi.encode(numberSeed))
        });
    }

    function _remember(uint64 id, IReceivableRegistry.RegistrationInput memory input) internal {
        registeredIds.push(id);
        inputOf[id] = input;
        successes++;
    }

    /// @dev An existing receivable id (registered or a split part) and its state, or 0 if none yet: one
    /// in a status of `wanted` (a bit per status) three times in four when there is one, else any.
    function _pick(uint256 seed, uint256 wanted)
        internal
        view
        returns (uint64 id, IReceivableRegistry.Receivable memory r)
    {
        uint64 count = registry.receivableCount();
        if (count == 0) return (0, r);
        uint64 start = uint64(seed % count);
        if ((seed >> 128) % 4 != 0) {
            for (uint64 i = 0; i < count; ++i) {
                id = 1 + (start + i) % count;
                r = registry.getReceivable(id);
                if (wanted & (1 << uint8(r.status)) != 0) return (id, r);
            }
        }
        id = 1 + start;
        r = registry.getReceivable(id);
    }

    function _root(uint64 id) internal view returns (uint64) {
        while (registry.parentOf(id) != 0) id = registry.parentOf(id);
        return id;
    }

    /// @dev Mostly a valid part of the unpaid balance; sometimes all of it, zero, or more.
    function _amountAround(IReceivableRegistry.Receivable memory r, uint64 seed) internal pure returns (uint64) {
        uint64 unpaid = r.faceValue - r.paid;
        uint64 mode = seed % 8;
        if (mode == 0) return 0;
        if (mode == 1) return unpaid + 1;
        if (mode <= 3 || unpaid == 0) return unpaid;
        return 1 + (seed >> 8) % unpaid;
    }
}

/// @notice Invariants of the registry under any sequence of the handler's actions.
contract RegistryInvariantTest {
    ReceivableRegistry internal registry;
    RegistryHandler internal handler;

    function setUp() public {
        registry = new ReceivableRegistry(address(this), address(new RegistryForwarder()));
        handler = new RegistryHandler(registry);
        _admit("CREDITOR-A", registry.CREDITOR_ROLE(), address(0xC1));
        _admit("CREDITOR-B", registry.CREDITOR_ROLE(), address(0xC2));
        _admit("DEBTOR-A", registry.DEBTOR_ROLE(), address(0xD1));
        _admit("DEBTOR-B", registry.DEBTOR_ROLE(), address(0xD2));
        _admit("FACTOR-A", registry.FACTOR_ROLE(), address(0xF1));
        _admit("FACTOR-B", registry.FACTOR_ROLE(), address(0xF2));
        VM.warp(1_750_000_000);
    }

    /// @dev Only the handler is fuzzed (not the registry directly, nor the forwarder).
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function targetSelectors() public view returns (FuzzSelector[] memory selectors) {
        bytes4[] memory s = new bytes4[](14);
        s[0] = RegistryHandler.register.selector;
        s[1] = RegistryHandler.registerBatch.selector;
        s[2] = RegistryHandler.confirm.selector;
        s[3] = RegistryHandler.dispute.selector;
        s[4] = RegistryHandler.resolveDispute.selector;
        s[5] = RegistryHandler.cancel.selector;
        s[6] = RegistryHandler.assign.selector;
        s[7] = RegistryHandler.recordPayment.selector;
        s[8] = RegistryHandler.reportPayment.selector;
        s[9] = RegistryHandler.settleClaim.selector;
        s[10] = RegistryHandler.split.selector;
        s[11] = RegistryHandler.buyBack.selector;
        s[12] = RegistryHandler.declareDefault.selector;
        s[13] = RegistryHandler.passTime.selector;
        selectors = new FuzzSelector[](1);
        selectors[0] = FuzzSelector(address(handler), s);
    }

    // ------------------------------------------------------------------ invariants

    /// Paid never exceeds face value; settled exactly when fully paid.
    function invariant_paidNeverExceedsFaceValue() public view {
        uint64 count = registry.receivableCount();
        for (uint64 id = 1; id <= count; ++id) {
            IReceivableRegistry.Receivable memory r = registry.getReceivable(id);
            require(r.paid <= r.faceValue, "paid exceeds face value");
            require(
                (r.status == IReceivableRegistry.Status.Settled) == (r.faceValue > 0 && r.paid == r.faceValue),
                "settled <=> paid in full"
            );
        }
    }

    /// An invoice key (and a fingerprint) is held by at most one live registration: every registration
    /// not cancelled is the one its key and its fingerprint point to, so no two live ones share either.
    function invariant_invoiceKeyHeldByAtMostOneLiveRegistration() public view {
        uint256 n = handler.registeredCount();
        for (uint256 i = 0; i < n; ++i) {
            uint64 id = handler.registeredIds(i);
            IReceivableRegistry.Receivable memory r = registry.getReceivable(id);
            require(r.status != IReceivableRegistry.Status.None, "registered id unknown to the registry");
            if (r.status == IReceivableRegistry.Status.Cancelled) continue;
            IReceivableRegistry.RegistrationInput memory input = handler.registeredInput(id);
            bytes32 key = registry.invoiceKeyOf(input.debtor, input.invoiceNumberHash);
            require(registry.receivableIdByInvoiceKey(key) == id, "live registration does not hold its invoice key");
            require(
                registry.receivableIdByFingerprint(registry.fingerprintOf(input)) == id,
                "live registration does not hold its fingerprint"
            );
        }
    }

    /// The ledger's event counter never goes back, and the head moves exactly when an event is folded.
    function invariant_ledgerEventCountIsMonotonic() public view {
        (bytes32 head, uint64 count) = registry.ledger();
        require(!handler.ledgerWentBack(), "ledger event count decreased");
        require(!handler.headChangedWithoutEvent(), "ledger head changed without an event");
        require(!handler.eventWithoutHeadChange(), "event folded without changing the head");
        require(count == handler.lastEventCount() && head == handler.lastHead(), "ledger changed outside the handler");
    }

    /// What the rules refuse never goes through: a creditor confirming its own invoice, an advance
    /// above the unpaid balance.
    function invariant_refusedActionsNeverSucceed() public view {
        require(!handler.forbiddenActionSucceeded(), "an action the rules refuse went through");
    }

    /// A split conserves value: the parts' face values add up to the parent's unpaid balance at the split.
    function invariant_splitConservesValue() public view {
        uint64 count = registry.receivableCount();
        uint256[] memory partsTotal = new uint256[](count + 1);
        for (uint64 id = 1; id <= count; ++id) {
            uint64 parent = registry.parentOf(id);
            if (parent != 0) partsTotal[parent] += registry.getReceivable(id).faceValue;
        }
        for (uint64 id = 1; id <= count; ++id) {
            IReceivableRegistry.Receivable memory r = registry.getReceivable(id);
            if (r.status == IReceivableRegistry.Status.Split) {
                require(partsTotal[id] == r.faceValue - r.paid, "split parts do not add up");
            } else {
                require(partsTotal[id] == 0, "parts of a receivable that was not split");
            }
        }
    }

    // ------------------------------------------------------------------ setup helpers

    function _admit(string memory name, bytes32 role, address key) internal {
        bytes32[] memory roles = new bytes32[](1);
        roles[0] = role;
        uint24 entity = registry.admitParticipant(keccak256(bytes(name)), roles, key);
        handler.addParty(entity, key, role);
    }
}
