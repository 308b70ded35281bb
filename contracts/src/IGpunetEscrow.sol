// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title gpunet escrow: types, errors and events
/// @notice Everything a client of the escrow needs besides the functions: the job
///         state enum (mirrors protocol/lifecycle.py one-to-one), the EIP-712 structs
///         (mirror protocol/eip712.py), the calldata structs, custom errors and events.
interface IGpunetEscrow {
    /// @notice Job states; the integer values are protocol.lifecycle.JobState.
    enum JobState {
        None,
        Matched,
        Submitted,
        Disputed,
        Finalized,
        Refunded,
        Slashed
    }

    /// @notice EIP-712 `Offer`, signed by the provider. `client == address(0)`: any client.
    struct Offer {
        address provider;
        address client;
        bytes32 capabilitiesHash;
        uint256 pricePerGpuSecond;
        uint64 nonce;
        uint64 expiry;
    }

    /// @notice EIP-712 `Attestation`, signed by the provider for one job.
    struct Attestation {
        uint64 jobId;
        address provider;
        bytes32 specHash;
        bytes32 outputHash;
        bytes32 runtimeId;
        uint8 determinism;
        uint64 meteredMillis;
    }

    /// @notice A job as the contract commits to it. It lives in one storage slot of its
    ///         client, `lane`, which holds keccak256(abi.encode(job)) with the low byte
    ///         replaced by the state; callers pass the struct back in calldata. A lane
    ///         whose job reached a terminal state can be reused by the client's next job,
    ///         so steady-state job creation rewrites a warm slot instead of a fresh one.
    struct Job {
        uint64 jobId; // global counter; unique forever (attestations sign it)
        address client;
        uint64 lane; // the client's storage lane holding this job
        address provider;
        uint256 pricePerGpuSecond; // <= type(uint128).max, checked at creation
        uint128 maxPayment;
        uint64 deadline; // unix seconds; the result must be submitted by then
        bytes32 specHash;
        uint64 challengeEnd; // 0 until submitted; challenges allowed while now <= challengeEnd
        uint64 meteredMillis; // 0 until submitted
        bytes32 resultHash; // EIP-712 digest of the provider's attestation; 0 until submitted
        address challenger; // 0 unless disputed
    }

    /// @notice One job to create (batch form of createJob).
    struct NewJob {
        Offer offer;
        bytes offerSig;
        bytes32 specHash;
        uint128 maxPayment;
        uint64 deadline;
        uint64 lane;
    }

    /// @notice One result to record (batch form of submitResult; authenticated by the
    ///         provider's own transaction, so it carries no signature).
    struct Result {
        Job job;
        bytes32 outputHash;
        bytes32 runtimeId;
        uint8 determinism;
        uint64 meteredMillis;
    }

    /// @notice A provider's stake, packed in one slot.
    struct Stake {
        uint96 active;
        uint96 unbonding;
        uint64 unlockAt;
    }

    // ------------------------------------------------------------------ errors
    error InvalidState(uint64 jobId, JobState current);
    error JobMismatch(uint64 jobId);
    error LaneBusy(address client, uint64 lane, JobState current);
    error OfferExpired(uint64 expiry);
    error NonceUsed(address provider, uint64 nonce);
    error WrongClient(address offeredTo);
    error InvalidSignature();
    error InsufficientStake(address provider, uint256 stake, uint256 minimum);
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error InvalidDeadline(uint64 deadline);
    error ZeroAmount();
    error PriceTooHigh(uint256 price);
    error NotProvider(address caller);
    error NotClient(address caller);
    error NotResolver(address caller);
    error DeadlinePassed(uint64 deadline);
    error DeadlineNotPassed(uint64 deadline);
    error ChallengeWindowClosed(uint64 challengeEnd);
    error ChallengeWindowOpen(uint64 challengeEnd);
    error NotEquivocation();
    error AttestationMismatch();
    error StakeLocked(uint64 unlockAt);
    error NothingUnbonding();
    error EmptyBatch();
    error ZeroAddress();

    // ------------------------------------------------------------------ events
    /// @notice A job was matched (None -> Matched); with the topics this is the whole Job.
    event JobCreated(
        uint64 indexed jobId,
        address indexed client,
        address indexed provider,
        uint64 lane,
        uint256 pricePerGpuSecond,
        uint128 maxPayment,
        uint64 deadline,
        bytes32 specHash
    );
    /// @notice The provider recorded its attestation (Matched -> Submitted).
    event ResultSubmitted(
        uint64 indexed jobId,
        bytes32 outputHash,
        bytes32 runtimeId,
        uint8 determinism,
        uint64 meteredMillis,
        uint64 challengeEnd
    );
    /// @notice A verifier posted a bond (Submitted -> Disputed).
    event JobChallenged(uint64 indexed jobId, address indexed challenger, uint256 bond);
    /// @notice Provider paid, remainder refunded (-> Finalized).
    event JobFinalized(uint64 indexed jobId, uint256 payment, uint256 refund);
    /// @notice Deadline missed (Matched -> Refunded); penalty taken from stake to the client.
    event JobRefunded(uint64 indexed jobId, uint256 refund, uint256 penalty);
    /// @notice Provider slashed (-> Slashed): `slashed` was taken from its stake and
    ///         `rewarded` (challenger or finder) received all of it (resolve) or half of
    ///         it, the client the other half (proveEquivocation).
    event JobSlashed(uint64 indexed jobId, address indexed rewarded, uint256 slashed);

    event Deposited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);
    event Staked(address indexed provider, uint256 amount);
    event UnstakeRequested(address indexed provider, uint256 amount, uint64 unlockAt);
    event StakeWithdrawn(address indexed provider, uint256 amount);
    event NoncesCancelled(address indexed provider, uint256 wordPos, uint256 mask);
    event ResolverChanged(address indexed resolver);
}
