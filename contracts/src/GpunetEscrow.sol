// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IGpunetEscrow} from "./IGpunetEscrow.sol";

/// @title gpunet escrow: prepaid deposits, provider stakes, signed offers and attestations
/// @notice Jobs follow protocol/lifecycle.py exactly. Money lives in an internal ledger:
///         clients deposit the payment token once and jobs lock part of that balance;
///         earnings, refunds, rewards and returned bonds are credited to `balanceOf` and
///         leave only through `withdraw` (pull payments). Only `deposit` and `withdraw`
///         call the token, so job functions make no external calls at all.
///         Invariant: token.balanceOf(this) == sum(balanceOf) + sum(stakes, active and
///         unbonding) + sum(maxPayment of live jobs) + sum(bonds of disputed jobs).
/// @dev A job is stored as one slot of its client's lane: keccak256(abi.encode(job)) with
///      its low byte replaced by the JobState. Every call that moves a job passes the
///      struct back in calldata; the contract checks it against the slot and writes the
///      next hash. Terminal jobs keep only the state, and their lane can be reused.
contract GpunetEscrow is IGpunetEscrow, EIP712, ReentrancyGuardTransient, Ownable2Step {
    using SafeERC20 for IERC20;

    bytes32 public constant OFFER_TYPEHASH = keccak256(
        "Offer(address provider,address client,bytes32 capabilitiesHash,"
        "uint256 pricePerGpuSecond,uint64 nonce,uint64 expiry)"
    );
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(uint64 jobId,address provider,bytes32 specHash,bytes32 outputHash,"
        "bytes32 runtimeId,uint8 determinism,uint64 meteredMillis)"
    );
    uint256 private constant _STATE_MASK = 0xff;

    /// @notice The ERC-20 every amount is denominated in (standard token: no fee on
    ///         transfer, no rebasing).
    IERC20 public immutable token;
    /// @notice Active stake a provider needs for a new job to match its offer.
    uint256 public immutable minStake;
    /// @notice Seconds between requestUnstake and withdrawStake.
    uint64 public immutable unbondingDelay;
    /// @notice Seconds after submitResult during which the result can be challenged.
    uint64 public immutable challengeWindow;
    /// @notice Exact bond a challenger locks from its balance.
    uint256 public immutable challengeBond;
    /// @notice Stake taken from a provider found wrong (resolution or equivocation).
    uint256 public immutable slashAmount;
    /// @notice Stake taken from a provider that missed a deadline, paid to the client.
    uint256 public immutable refundPenalty;
    /// @notice Longest allowed time from creation to deadline: unbondingDelay minus
    ///         challengeWindow, so stake active when a job matches stays slashable until
    ///         the job's challenge window has closed.
    uint64 public immutable maxJobDuration;

    /// @notice Placeholder dispute resolver until the verification committee exists.
    address public resolver;
    /// @notice Free (withdrawable) token balance of each account.
    mapping(address account => uint256) public balanceOf;
    mapping(address provider => Stake) private _stakes;
    mapping(address provider => mapping(uint256 wordPos => uint256 bits)) private _nonceBitmap;
    mapping(address client => mapping(uint64 lane => bytes32)) private _lanes;
    /// @notice Id the next job will get (ids start at 1).
    uint64 public nextJobId = 1;

    /// @notice Deploy the escrow.
    /// @param token_ payment token
    /// @param resolver_ initial dispute resolver (placeholder role)
    /// @param minStake_ minimum active stake to match a job
    /// @param unbondingDelay_ seconds before requested unstake can be withdrawn
    /// @param challengeWindow_ seconds a submitted result can be challenged
    /// @param challengeBond_ bond a challenger locks
    /// @param slashAmount_ stake slashed on a proven fault
    /// @param refundPenalty_ stake paid to the client when a deadline is missed
    constructor(
        IERC20 token_,
        address resolver_,
        uint256 minStake_,
        uint64 unbondingDelay_,
        uint64 challengeWindow_,
        uint256 challengeBond_,
        uint256 slashAmount_,
        uint256 refundPenalty_
    ) EIP712("gpunet", "1") Ownable(msg.sender) {
        if (address(token_) == address(0) || resolver_ == address(0)) revert ZeroAddress();
        if (challengeBond_ == 0) revert ZeroAmount();
        if (unbondingDelay_ <= challengeWindow_) revert InvalidDeadline(unbondingDelay_);
        token = token_;
        resolver = resolver_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        challengeWindow = challengeWindow_;
        challengeBond = challengeBond_;
        slashAmount = slashAmount_;
        refundPenalty = refundPenalty_;
        maxJobDuration = unbondingDelay_ - challengeWindow_;
        emit ResolverChanged(resolver_);
    }

    // ================================================================ money in/out

    /// @notice Pull `amount` tokens from the caller (needs an allowance) into its balance.
    /// @param amount token units
    function deposit(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        balanceOf[msg.sender] += amount;
        emit Deposited(msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Send `amount` of the caller's free balance to the caller (pull payment).
    /// @param amount token units
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        _debit(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ================================================================ staking

    /// @notice Move `amount` of the caller's free balance into its active stake.
    /// @param amount token units (fits uint96)
    function stake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        _debit(msg.sender, amount);
        Stake storage s = _stakes[msg.sender];
        s.active += SafeCast.toUint96(amount);
        emit Staked(msg.sender, amount);
    }

    /// @notice Start unbonding `amount` of active stake; it stays slashable until withdrawn.
    ///         Restarts the unbonding delay for everything unbonding.
    /// @param amount token units
    function requestUnstake(uint256 amount) external {
        Stake memory s = _stakes[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > s.active) revert InsufficientStake(msg.sender, s.active, amount);
        uint96 a = uint96(amount);
        uint64 unlockAt = uint64(block.timestamp) + unbondingDelay;
        _stakes[msg.sender] = Stake(s.active - a, s.unbonding + a, unlockAt);
        emit UnstakeRequested(msg.sender, amount, unlockAt);
    }

    /// @notice After the unbonding delay, move all unbonding stake to the free balance.
    function withdrawStake() external {
        Stake memory s = _stakes[msg.sender];
        if (s.unbonding == 0) revert NothingUnbonding();
        if (block.timestamp < s.unlockAt) revert StakeLocked(s.unlockAt);
        _stakes[msg.sender] = Stake(s.active, 0, 0);
        balanceOf[msg.sender] += s.unbonding;
        emit StakeWithdrawn(msg.sender, s.unbonding);
    }

    /// @notice Mark offer nonces as used so their signed offers can never match.
    /// @param wordPos nonce >> 8
    /// @param mask bit (nonce & 255) set for every nonce to cancel in that word
    function cancelNonces(uint256 wordPos, uint256 mask) external {
        _nonceBitmap[msg.sender][wordPos] |= mask;
        emit NoncesCancelled(msg.sender, wordPos, mask);
    }

    // ================================================================ jobs

    /// @notice Match a job to a provider's signed offer, locking `maxPayment` of the
    ///         caller's balance (None -> Matched) in the caller's storage `lane`, which
    ///         must be unused or hold a finished (terminal) job.
    /// @param offer the provider's offer (open, or bound to the caller)
    /// @param offerSig 65-byte provider signature over the offer
    /// @param specHash hash of the job spec (model, inputs, limits)
    /// @param maxPayment most the client pays; the rest of it is refunded
    /// @param deadline unix time by which the result must be submitted
    /// @param lane the caller's storage lane for this job
    /// @return jobId the new job's id
    function createJob(
        Offer calldata offer,
        bytes calldata offerSig,
        bytes32 specHash,
        uint128 maxPayment,
        uint64 deadline,
        uint64 lane
    ) external returns (uint64 jobId) {
        jobId = nextJobId;
        nextJobId = jobId + 1;
        _create(jobId, offer, offerSig, specHash, maxPayment, deadline, lane);
        _debit(msg.sender, maxPayment);
    }

    /// @notice Batch form of createJob: all jobs are paid from the caller's balance and
    ///         get consecutive ids.
    /// @param newJobs jobs to create; the whole batch reverts if one is invalid
    /// @return firstJobId id of newJobs[0]; newJobs[i] gets firstJobId + i
    function createJobs(NewJob[] calldata newJobs) external returns (uint64 firstJobId) {
        uint256 n = newJobs.length;
        if (n == 0) revert EmptyBatch();
        firstJobId = nextJobId;
        uint256 total = 0;
        for (uint256 i; i < n; ++i) {
            NewJob calldata j = newJobs[i];
            _create(
                firstJobId + uint64(i), j.offer, j.offerSig, j.specHash, j.maxPayment, j.deadline, j.lane
            );
            total += j.maxPayment;
        }
        nextJobId = firstJobId + uint64(n);
        _debit(msg.sender, total);
    }

    /// @notice Record the provider's signed attestation before the deadline
    ///         (Matched -> Submitted); the challenge window starts.
    /// @param job the job struct as stored
    /// @param outputHash sha256 of the output
    /// @param runtimeId hash of the runtime descriptor
    /// @param determinism determinism tier
    /// @param meteredMillis metered device time in milliseconds (paid per millisecond)
    /// @param sig provider's EIP-712 attestation signature
    function submitResult(
        Job calldata job,
        bytes32 outputHash,
        bytes32 runtimeId,
        uint8 determinism,
        uint64 meteredMillis,
        bytes calldata sig
    ) external {
        bytes32 digest = _submit(job, outputHash, runtimeId, determinism, meteredMillis);
        _verify(digest, sig, job.provider);
    }

    /// @notice Batch form of submitResult for the caller's own jobs. No signatures: the
    ///         provider's transaction authenticates every result, and the stored
    ///         resultHash is the same EIP-712 digest it would have signed, so a signed
    ///         attestation that differs from it proves equivocation.
    /// @param results results to record; the whole batch reverts if one is invalid
    function submitResults(Result[] calldata results) external {
        uint256 n = results.length;
        if (n == 0) revert EmptyBatch();
        for (uint256 i; i < n; ++i) {
            Result calldata r = results[i];
            _submit(r.job, r.outputHash, r.runtimeId, r.determinism, r.meteredMillis);
        }
    }

    /// @notice The client accepts the result at once (Submitted -> Finalized).
    /// @param job the job struct as stored
    function acceptResult(Job calldata job) external {
        _check(job, JobState.Submitted);
        if (msg.sender != job.client) revert NotClient(msg.sender);
        (uint256 payment, uint256 refund_) = _payout(job);
        _credit(job.provider, payment);
        _credit(job.client, refund_);
        _terminate(job, JobState.Finalized);
        emit JobFinalized(job.jobId, payment, refund_);
    }

    /// @notice Anyone finalizes after the challenge window (Submitted -> Finalized).
    /// @param job the job struct as stored
    function finalize(Job calldata job) external {
        _check(job, JobState.Submitted);
        if (block.timestamp <= job.challengeEnd) revert ChallengeWindowOpen(job.challengeEnd);
        (uint256 payment, uint256 refund_) = _payout(job);
        _credit(job.provider, payment);
        _credit(job.client, refund_);
        _terminate(job, JobState.Finalized);
        emit JobFinalized(job.jobId, payment, refund_);
    }

    /// @notice Batch settlement (Submitted -> Finalized): each job must be past its
    ///         challenge window, or the caller must be its client (acceptance).
    ///         Credits to consecutive jobs of one provider/client are written once.
    /// @param jobs jobs to settle; the whole batch reverts if one is not settleable
    function finalizeMany(Job[] calldata jobs) external {
        uint256 n = jobs.length;
        if (n == 0) revert EmptyBatch();
        address provider = address(0);
        address client = address(0);
        uint256 providerAcc = 0;
        uint256 clientAcc = 0;
        for (uint256 i; i < n; ++i) {
            Job calldata job = jobs[i];
            _check(job, JobState.Submitted);
            if (msg.sender != job.client && block.timestamp <= job.challengeEnd) {
                revert ChallengeWindowOpen(job.challengeEnd);
            }
            (uint256 payment, uint256 refund_) = _payout(job);
            if (job.provider != provider) {
                _credit(provider, providerAcc);
                (provider, providerAcc) = (job.provider, 0);
            }
            if (job.client != client) {
                _credit(client, clientAcc);
                (client, clientAcc) = (job.client, 0);
            }
            providerAcc += payment;
            clientAcc += refund_;
            _terminate(job, JobState.Finalized);
            emit JobFinalized(job.jobId, payment, refund_);
        }
        _credit(provider, providerAcc);
        _credit(client, clientAcc);
    }

    /// @notice Anyone refunds a job whose deadline passed with no result
    ///         (Matched -> Refunded); the client also receives the provider's penalty.
    /// @param job the job struct as stored
    function refund(Job calldata job) external {
        _check(job, JobState.Matched);
        if (block.timestamp <= job.deadline) revert DeadlineNotPassed(job.deadline);
        uint256 penalty = _slash(job.provider, refundPenalty);
        _credit(job.client, uint256(job.maxPayment) + penalty);
        _terminate(job, JobState.Refunded);
        emit JobRefunded(job.jobId, job.maxPayment, penalty);
    }

    /// @notice Challenge a submitted result during its window, locking `challengeBond`
    ///         from the caller's balance (Submitted -> Disputed).
    /// @param job the job struct as stored
    function challenge(Job calldata job) external {
        _check(job, JobState.Submitted);
        if (block.timestamp > job.challengeEnd) revert ChallengeWindowClosed(job.challengeEnd);
        _debit(msg.sender, challengeBond);
        Job memory next = job;
        next.challenger = msg.sender;
        _lanes[job.client][job.lane] = _hashJobMem(next, JobState.Disputed);
        emit JobChallenged(job.jobId, msg.sender, challengeBond);
    }

    /// @notice Resolver's verdict on a disputed job. Provider at fault: Disputed -> Slashed
    ///         (client refunded in full, challenger gets its bond back plus the slashed
    ///         stake). Otherwise Disputed -> Finalized (normal payout, bond to provider).
    /// @param job the job struct as stored
    /// @param providerAtFault the verdict
    function resolve(Job calldata job, bool providerAtFault) external {
        if (msg.sender != resolver) revert NotResolver(msg.sender);
        _check(job, JobState.Disputed);
        if (providerAtFault) {
            uint256 slashed = _slash(job.provider, slashAmount);
            _credit(job.client, job.maxPayment);
            _credit(job.challenger, challengeBond + slashed);
            _terminate(job, JobState.Slashed);
            emit JobSlashed(job.jobId, job.challenger, slashed);
        } else {
            (uint256 payment, uint256 refund_) = _payout(job);
            _credit(job.provider, payment + challengeBond);
            _credit(job.client, refund_);
            _terminate(job, JobState.Finalized);
            emit JobFinalized(job.jobId, payment, refund_);
        }
    }

    /// @notice Two different attestations by the job's provider for one job slash it with
    ///         no re-execution (Submitted|Disputed -> Slashed). The client gets its full
    ///         payment back plus half the slashed stake; the other half goes to the finder:
    ///         the challenger if the job was disputed (who also gets its bond back), else
    ///         the caller. (A provider reporting itself thus still loses half.)
    ///         `sig1` may be empty when `a1` is the recorded result (its digest equals
    ///         job.resultHash): the provider's submit transaction already signed it.
    /// @param job the job struct as stored
    /// @param a1 first attestation
    /// @param sig1 provider signature over a1 (or empty, see above)
    /// @param a2 second, different attestation
    /// @param sig2 provider signature over a2
    function proveEquivocation(
        Job calldata job,
        Attestation calldata a1,
        bytes calldata sig1,
        Attestation calldata a2,
        bytes calldata sig2
    ) external {
        JobState state = _laneState(job.client, job.lane);
        if (state != JobState.Submitted && state != JobState.Disputed) {
            revert InvalidState(job.jobId, state);
        }
        _check(job, state);
        if (
            a1.jobId != job.jobId || a2.jobId != job.jobId || a1.provider != job.provider
                || a2.provider != job.provider
        ) revert AttestationMismatch();
        bytes32 d1 = _hashTypedDataV4(keccak256(abi.encode(ATTESTATION_TYPEHASH, a1)));
        bytes32 d2 = _hashTypedDataV4(keccak256(abi.encode(ATTESTATION_TYPEHASH, a2)));
        if (d1 == d2) revert NotEquivocation();
        if (sig1.length != 0 || d1 != job.resultHash) _verify(d1, sig1, job.provider);
        _verify(d2, sig2, job.provider);
        uint256 slashed = _slash(job.provider, slashAmount);
        uint256 finderReward = slashed / 2;
        address finder = msg.sender;
        if (state == JobState.Disputed) {
            finder = job.challenger;
            _credit(finder, challengeBond);
        }
        _credit(finder, finderReward);
        _credit(job.client, uint256(job.maxPayment) + (slashed - finderReward));
        _terminate(job, JobState.Slashed);
        emit JobSlashed(job.jobId, finder, slashed);
    }

    /// @notice Replace the dispute resolver (owner only; placeholder governance).
    /// @param resolver_ new resolver
    function setResolver(address resolver_) external onlyOwner {
        if (resolver_ == address(0)) revert ZeroAddress();
        resolver = resolver_;
        emit ResolverChanged(resolver_);
    }

    // ================================================================ views

    /// @notice State of the job in a client's lane (None if the lane was never used).
    /// @param client the client
    /// @param lane the lane
    /// @return the state
    function laneState(address client, uint64 lane) external view returns (JobState) {
        return _laneState(client, lane);
    }

    /// @notice A lane's slot: the job struct's hash with the state in the low byte while
    ///         the job is live; just the state once it is terminal.
    /// @param client the client
    /// @param lane the lane
    /// @return the slot value
    function laneSlot(address client, uint64 lane) external view returns (bytes32) {
        return _lanes[client][lane];
    }

    /// @notice The slot value a job struct in a given state would have.
    /// @param job the struct
    /// @param state the state
    /// @return the slot value
    function hashJob(Job calldata job, JobState state) external pure returns (bytes32) {
        return _hashJob(job, state);
    }

    /// @notice A provider's stake.
    /// @param provider the provider
    /// @return active stake, unbonding stake, unix time the unbonding part unlocks
    function stakeOf(address provider) external view returns (uint96, uint96, uint64) {
        Stake memory s = _stakes[provider];
        return (s.active, s.unbonding, s.unlockAt);
    }

    /// @notice Whether a provider's offer nonce is used or cancelled.
    /// @param provider the provider
    /// @param nonce the offer nonce
    /// @return true if an offer with this nonce can no longer match
    function nonceUsed(address provider, uint64 nonce) external view returns (bool) {
        return (_nonceBitmap[provider][nonce >> 8] >> (nonce & 0xff)) & 1 == 1;
    }

    /// @notice EIP-712 digest of an offer (what the provider signs).
    /// @param offer the offer
    /// @return the digest
    function offerDigest(Offer calldata offer) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(OFFER_TYPEHASH, offer)));
    }

    /// @notice EIP-712 digest of an attestation (what the provider signs).
    /// @param a the attestation
    /// @return the digest
    function attestationDigest(Attestation calldata a) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(ATTESTATION_TYPEHASH, a)));
    }

    /// @notice The EIP-712 domain separator.
    /// @return the separator
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ================================================================ internals

    function _create(
        uint64 jobId,
        Offer calldata offer,
        bytes calldata offerSig,
        bytes32 specHash,
        uint128 maxPayment,
        uint64 deadline,
        uint64 lane
    ) private {
        if (block.timestamp > offer.expiry) revert OfferExpired(offer.expiry);
        if (offer.client != address(0) && offer.client != msg.sender) {
            revert WrongClient(offer.client);
        }
        if (deadline <= block.timestamp || deadline > block.timestamp + maxJobDuration) {
            revert InvalidDeadline(deadline);
        }
        if (maxPayment == 0) revert ZeroAmount();
        if (offer.pricePerGpuSecond > type(uint128).max) {
            revert PriceTooHigh(offer.pricePerGpuSecond);
        }
        address provider = offer.provider;
        _verify(_hashTypedDataV4(keccak256(abi.encode(OFFER_TYPEHASH, offer))), offerSig, provider);
        _useNonce(provider, offer.nonce);
        uint256 active = _stakes[provider].active;
        if (active < minStake) revert InsufficientStake(provider, active, minStake);
        mapping(uint64 => bytes32) storage lanes = _lanes[msg.sender];
        JobState current = JobState(uint8(uint256(lanes[lane]) & _STATE_MASK));
        if (current != JobState.None && current < JobState.Finalized) {
            revert LaneBusy(msg.sender, lane, current);
        }
        Job memory job = Job({
            jobId: jobId,
            client: msg.sender,
            lane: lane,
            provider: provider,
            pricePerGpuSecond: offer.pricePerGpuSecond,
            maxPayment: maxPayment,
            deadline: deadline,
            specHash: specHash,
            challengeEnd: 0,
            meteredMillis: 0,
            resultHash: bytes32(0),
            challenger: address(0)
        });
        lanes[lane] = _hashJobMem(job, JobState.Matched);
        _emitCreated(job);
    }

    function _emitCreated(Job memory job) private {
        emit JobCreated(
            job.jobId,
            job.client,
            job.provider,
            job.lane,
            job.pricePerGpuSecond,
            job.maxPayment,
            job.deadline,
            job.specHash
        );
    }

    /// @dev Checks and records a result; returns the attestation digest (not verified here).
    function _submit(
        Job calldata job,
        bytes32 outputHash,
        bytes32 runtimeId,
        uint8 determinism,
        uint64 meteredMillis
    ) private returns (bytes32 digest) {
        _check(job, JobState.Matched);
        if (msg.sender != job.provider) revert NotProvider(msg.sender);
        if (block.timestamp > job.deadline) revert DeadlinePassed(job.deadline);
        digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ATTESTATION_TYPEHASH,
                    job.jobId,
                    job.provider,
                    job.specHash,
                    outputHash,
                    runtimeId,
                    determinism,
                    meteredMillis
                )
            )
        );
        uint64 challengeEnd = uint64(block.timestamp) + challengeWindow;
        Job memory next = job;
        next.challengeEnd = challengeEnd;
        next.meteredMillis = meteredMillis;
        next.resultHash = digest;
        _lanes[job.client][job.lane] = _hashJobMem(next, JobState.Submitted);
        emit ResultSubmitted(
            job.jobId, outputHash, runtimeId, determinism, meteredMillis, challengeEnd
        );
    }

    /// @dev payment = min(floor(price * meteredMillis / 1000), maxPayment); no overflow
    ///      since price <= 2^128 and meteredMillis < 2^64.
    function _payout(Job calldata job) private pure returns (uint256 payment, uint256 refund_) {
        uint256 cost = job.pricePerGpuSecond * job.meteredMillis / 1000;
        payment = cost < job.maxPayment ? cost : job.maxPayment;
        refund_ = job.maxPayment - payment;
    }

    function _verify(bytes32 digest, bytes calldata sig, address signer) private pure {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, sig);
        if (err != ECDSA.RecoverError.NoError || recovered != signer) revert InvalidSignature();
    }

    function _useNonce(address provider, uint64 nonce) private {
        uint256 bit = uint256(1) << (nonce & 0xff);
        mapping(uint256 => uint256) storage words = _nonceBitmap[provider];
        uint256 word = words[nonce >> 8];
        if (word & bit != 0) revert NonceUsed(provider, nonce);
        words[nonce >> 8] = word | bit;
    }

    /// @dev Take up to `amount` from a provider's stake, active first, then unbonding.
    function _slash(address provider, uint256 amount) private returns (uint256 taken) {
        Stake memory s = _stakes[provider];
        uint256 total = uint256(s.active) + s.unbonding;
        taken = amount < total ? amount : total;
        if (taken == 0) return 0;
        uint96 fromActive = taken < s.active ? uint96(taken) : s.active;
        _stakes[provider] = Stake(s.active - fromActive, s.unbonding - uint96(taken - fromActive), s.unlockAt);
    }

    function _debit(address account, uint256 amount) private {
        uint256 bal = balanceOf[account];
        if (bal < amount) revert InsufficientBalance(account, bal, amount);
        unchecked {
            balanceOf[account] = bal - amount;
        }
    }

    function _credit(address account, uint256 amount) private {
        if (amount != 0) balanceOf[account] += amount;
    }

    function _laneState(address client, uint64 lane) private view returns (JobState) {
        return JobState(uint8(uint256(_lanes[client][lane]) & _STATE_MASK));
    }

    /// @dev Check the lane's state first (so an unused lane reports InvalidState(None)),
    ///      then that the struct is the one stored.
    function _check(Job calldata job, JobState expected) private view {
        bytes32 slot = _lanes[job.client][job.lane];
        JobState current = JobState(uint8(uint256(slot) & _STATE_MASK));
        if (current != expected) revert InvalidState(job.jobId, current);
        if (slot != _hashJob(job, expected)) revert JobMismatch(job.jobId);
    }

    /// @dev A terminal job keeps only its state; the lane can then take a new job.
    function _terminate(Job calldata job, JobState state) private {
        _lanes[job.client][job.lane] = bytes32(uint256(state));
    }

    function _hashJob(Job calldata job, JobState state) private pure returns (bytes32) {
        return bytes32((uint256(keccak256(abi.encode(job))) & ~_STATE_MASK) | uint8(state));
    }

    function _hashJobMem(Job memory job, JobState state) private pure returns (bytes32) {
        return bytes32((uint256(keccak256(abi.encode(job))) & ~_STATE_MASK) | uint8(state));
    }
}
