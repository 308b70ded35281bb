// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IGpunetEscrow} from "./IGpunetEscrow.sol";

/// @notice The part of GpunetEscrow the committee uses.
interface IEscrowResolver is IGpunetEscrow {
    /// @notice Resolver's verdict on a disputed job.
    function resolve(Job calldata job, bool providerAtFault) external;
    /// @notice A lane's slot (struct hash | state).
    function laneSlot(address client, uint64 lane) external view returns (bytes32);
    /// @notice Slot value of a struct in a state.
    function hashJob(Job calldata job, JobState state) external pure returns (bytes32);
    /// @notice The payment token.
    function token() external view returns (IERC20);
}

/// @title gpunet verifier committee: the escrow's dispute resolver
/// @notice Verifiers stake the payment token here. When a job is challenged on the escrow,
///         anyone opens a dispute; after a future block exists, anyone draws a committee
///         of up to `committeeSize` distinct staked verifiers (never the job's provider,
///         client or challenger) seeded by that block's hash. Members commit
///         keccak256(abi.encode(jobId, member, providerAtFault, salt)) inside the commit
///         window, reveal inside the reveal window, and anyone then finalizes: the
///         majority of revealed votes decides (a tie, including no votes at all, keeps the
///         provider's result: the challenger has not proven a fault) and the committee
///         calls `escrow.resolve`. Members that did not reveal lose `noVotePenalty` of
///         their stake; revealed votes on the winning side share those penalties and get
///         `voteReward` each from the reward reserve (while it lasts).
///         Invariant: token.balanceOf(this) == sum(stakes) + sum(balanceOf) + rewardReserve.
/// @dev Windows close early when everyone has acted (all committed: reveal opens; all
///      revealed: finalize allowed), so an honest committee resolves in a few blocks.
contract VerifierCommittee is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Phase of a dispute.
    enum Phase {
        None,
        Drawing,
        Voting,
        Resolved,
        Cancelled
    }

    /// @notice A verifier's stake record, one slot.
    struct Verifier {
        uint96 stake;
        uint64 unlockAt; // 0 while not exiting
        uint32 openDisputes; // disputes it sits in that are not finalized yet
        bool exiting;
    }

    /// @notice A dispute over one job.
    struct Dispute {
        bytes32 jobHash; // keccak256(abi.encode(job)) of the disputed struct
        uint64 drawBlock; // block whose hash seeds the draw
        uint64 commitEnd; // unix time; commits allowed while now <= commitEnd
        uint64 revealEnd; // unix time; reveals allowed while now <= revealEnd
        uint8 commits;
        uint8 reveals;
        uint8 faultVotes;
        Phase phase;
    }

    /// @notice A member's ballot.
    struct Ballot {
        bytes32 commitment;
        bool member;
        bool revealed;
        bool providerAtFault;
    }

    // ------------------------------------------------------------------ errors
    error ZeroAddress();
    error ZeroAmount();
    error BadParameter();
    error NotDisputed(uint64 jobId);
    error DisputeExists(uint64 jobId);
    error WrongPhase(uint64 jobId, Phase phase);
    error DrawTooEarly(uint64 drawBlock);
    error NotMember(uint64 jobId, address caller);
    error CommitClosed(uint64 commitEnd);
    error AlreadyCommitted(uint64 jobId, address member);
    error RevealNotOpen(uint64 commitEnd);
    error RevealClosed(uint64 revealEnd);
    error NoCommitment(uint64 jobId, address member);
    error AlreadyRevealed(uint64 jobId, address member);
    error BadReveal(uint64 jobId, address member);
    error VotingOpen(uint64 revealEnd);
    error JobMismatch(uint64 jobId);
    error NotExiting(address verifier);
    error AlreadyExiting(address verifier);
    error StakeLocked(uint64 unlockAt, uint32 openDisputes);
    error InsufficientBalance(address account, uint256 balance, uint256 needed);

    // ------------------------------------------------------------------ events
    /// @notice Stake added; `active` says whether the verifier can be drawn.
    event VerifierStaked(address indexed verifier, uint256 amount, uint256 stake, bool active);
    /// @notice The verifier left the active set; its stake unlocks at `unlockAt`.
    event ExitRequested(address indexed verifier, uint64 unlockAt);
    /// @notice Stake paid out after exit.
    event StakeWithdrawn(address indexed verifier, uint256 amount);
    /// @notice Free balance (rewards) paid out.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice The reward reserve was topped up.
    event RewardsFunded(address indexed from, uint256 amount);
    /// @notice A dispute was opened; the committee is drawn from `drawBlock`'s hash.
    event DisputeOpened(uint64 indexed jobId, address indexed opener, uint64 drawBlock);
    /// @notice The draw block's hash was no longer available; a new block was set.
    event DrawRescheduled(uint64 indexed jobId, uint64 drawBlock);
    /// @notice Committee drawn; voting windows set.
    event CommitteeDrawn(uint64 indexed jobId, address[] members, uint64 commitEnd, uint64 revealEnd);
    /// @notice A member committed a hidden vote.
    event VoteCommitted(uint64 indexed jobId, address indexed member);
    /// @notice A member revealed its vote.
    event VoteRevealed(uint64 indexed jobId, address indexed member, bool providerAtFault);
    /// @notice A member that did not reveal lost `penalty` of its stake.
    event VerifierPenalized(uint64 indexed jobId, address indexed member, uint256 penalty);
    /// @notice A member on the winning side was paid `reward` to its balance.
    event VerifierRewarded(uint64 indexed jobId, address indexed member, uint256 reward);
    /// @notice The dispute was decided and the escrow resolved.
    event DisputeResolved(uint64 indexed jobId, bool providerAtFault, uint8 faultVotes, uint8 reveals);
    /// @notice The job left Disputed by other means (equivocation proof); no verdict.
    event DisputeCancelled(uint64 indexed jobId);

    /// @notice The escrow this committee resolves.
    IEscrowResolver public immutable escrow;
    /// @notice The payment token (the escrow's).
    IERC20 public immutable token;
    /// @notice Stake needed to be drawn.
    uint256 public immutable minStake;
    /// @notice Members per committee (odd, 1..31); fewer if fewer are eligible.
    uint8 public immutable committeeSize;
    /// @notice Blocks between opening a dispute and the block whose hash seeds the draw.
    uint64 public immutable drawDelay;
    /// @notice Seconds after the draw during which members commit.
    uint64 public immutable commitWindow;
    /// @notice Seconds after the commit window during which members reveal.
    uint64 public immutable revealWindow;
    /// @notice Seconds between requestExit and withdrawStake.
    uint64 public immutable unbondingDelay;
    /// @notice Stake taken from a member that did not reveal.
    uint256 public immutable noVotePenalty;
    /// @notice Paid from the reserve to each member on the winning side.
    uint256 public immutable voteReward;

    /// @notice Tokens set aside for vote rewards.
    uint256 public rewardReserve;
    /// @notice Free (withdrawable) balance of each account: rewards.
    mapping(address account => uint256) public balanceOf;
    mapping(address => Verifier) private _verifiers;
    address[] private _active;
    mapping(address => uint256) private _activeIndex; // index + 1; 0 = not active
    mapping(uint64 jobId => Dispute) private _disputes;
    mapping(uint64 jobId => address[]) private _members;
    mapping(uint64 jobId => mapping(address => Ballot)) private _ballots;

    /// @notice Deploy the committee for an escrow (then make it the escrow's resolver).
    /// @param escrow_ the escrow
    /// @param minStake_ stake needed to be drawn
    /// @param committeeSize_ members per dispute (odd, 1..31)
    /// @param drawDelay_ blocks from opening to the seed block (>= 1)
    /// @param commitWindow_ seconds to commit
    /// @param revealWindow_ seconds to reveal
    /// @param unbondingDelay_ seconds from requestExit to withdrawStake
    /// @param noVotePenalty_ stake lost by a member that does not reveal (<= minStake_)
    /// @param voteReward_ reserve payment per winning vote
    constructor(
        IEscrowResolver escrow_,
        uint256 minStake_,
        uint8 committeeSize_,
        uint64 drawDelay_,
        uint64 commitWindow_,
        uint64 revealWindow_,
        uint64 unbondingDelay_,
        uint256 noVotePenalty_,
        uint256 voteReward_
    ) {
        if (address(escrow_) == address(0)) revert ZeroAddress();
        if (minStake_ == 0) revert ZeroAmount();
        if (
            committeeSize_ == 0 || committeeSize_ > 31 || committeeSize_ % 2 == 0 || drawDelay_ == 0
                || drawDelay_ > 128 || commitWindow_ == 0 || revealWindow_ == 0
                || noVotePenalty_ > minStake_
        ) revert BadParameter();
        escrow = escrow_;
        token = escrow_.token();
        minStake = minStake_;
        committeeSize = committeeSize_;
        drawDelay = drawDelay_;
        commitWindow = commitWindow_;
        revealWindow = revealWindow_;
        unbondingDelay = unbondingDelay_;
        noVotePenalty = noVotePenalty_;
        voteReward = voteReward_;
    }

    // ================================================================ staking

    /// @notice Pull `amount` tokens from the caller (needs an allowance) into its stake;
    ///         it joins the active set once the stake reaches minStake (not while exiting).
    /// @param amount token units (total stake fits uint96)
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Verifier storage v = _verifiers[msg.sender];
        uint96 total = v.stake + SafeCast.toUint96(amount);
        v.stake = total;
        bool active = !v.exiting && total >= minStake;
        if (active && _activeIndex[msg.sender] == 0) {
            _active.push(msg.sender);
            _activeIndex[msg.sender] = _active.length;
        }
        emit VerifierStaked(msg.sender, amount, total, active);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Leave the active set (no new draws); the stake unlocks after unbondingDelay
    ///         and once every dispute the verifier sits in is finalized.
    function requestExit() external {
        Verifier storage v = _verifiers[msg.sender];
        if (v.exiting) revert AlreadyExiting(msg.sender);
        if (v.stake == 0) revert ZeroAmount();
        v.exiting = true;
        uint64 unlockAt = uint64(block.timestamp) + unbondingDelay;
        v.unlockAt = unlockAt;
        _removeActive(msg.sender);
        emit ExitRequested(msg.sender, unlockAt);
    }

    /// @notice Pay out the whole stake of an exited verifier.
    function withdrawStake() external nonReentrant {
        Verifier memory v = _verifiers[msg.sender];
        if (!v.exiting) revert NotExiting(msg.sender);
        if (block.timestamp < v.unlockAt || v.openDisputes != 0) {
            revert StakeLocked(v.unlockAt, v.openDisputes);
        }
        delete _verifiers[msg.sender];
        emit StakeWithdrawn(msg.sender, v.stake);
        if (v.stake != 0) token.safeTransfer(msg.sender, v.stake);
    }

    /// @notice Pay out `amount` of the caller's free balance (rewards).
    /// @param amount token units
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 bal = balanceOf[msg.sender];
        if (bal < amount) revert InsufficientBalance(msg.sender, bal, amount);
        balanceOf[msg.sender] = bal - amount;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Add `amount` tokens (pulled from the caller) to the vote reward reserve.
    /// @param amount token units
    function fundRewards(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        rewardReserve += amount;
        emit RewardsFunded(msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    // ================================================================ disputes

    /// @notice Open the dispute of a job the escrow holds as Disputed. Anyone may call
    ///         (the challenger normally does, in the block after its challenge).
    /// @param job the disputed job struct (challenger set)
    function openDispute(IGpunetEscrow.Job calldata job) external {
        _checkDisputed(job);
        Dispute storage d = _disputes[job.jobId];
        if (d.phase != Phase.None) revert DisputeExists(job.jobId);
        uint64 drawBlock = uint64(block.number) + drawDelay;
        d.jobHash = keccak256(abi.encode(job));
        d.drawBlock = drawBlock;
        d.phase = Phase.Drawing;
        emit DisputeOpened(job.jobId, msg.sender, drawBlock);
    }

    /// @notice Draw the committee once the seed block exists (anyone). The seed is
    ///         keccak256(blockhash(drawBlock), jobId); if that hash has aged out of the
    ///         256-block window, the draw is rescheduled instead.
    /// @param job the disputed job struct
    function draw(IGpunetEscrow.Job calldata job) external {
        uint64 jobId = job.jobId;
        Dispute storage d = _disputes[jobId];
        if (d.phase != Phase.Drawing) revert WrongPhase(jobId, d.phase);
        if (keccak256(abi.encode(job)) != d.jobHash) revert JobMismatch(jobId);
        uint64 drawBlock = d.drawBlock;
        if (block.number <= drawBlock) revert DrawTooEarly(drawBlock);
        bytes32 bh = blockhash(drawBlock);
        if (bh == bytes32(0)) {
            uint64 next = uint64(block.number) + drawDelay;
            d.drawBlock = next;
            emit DrawRescheduled(jobId, next);
            return;
        }
        address[] storage members = _members[jobId];
        uint256 seed = uint256(keccak256(abi.encode(bh, jobId)));
        uint256 n = _active.length;
        uint256 want = committeeSize;
        // Rejection sampling over the active set, bounded: at most 4 tries per seat plus
        // a final in-order sweep so a small set is always fully used.
        for (uint256 i; i < want * 4 && members.length < want && n != 0; ++i) {
            address cand = _active[uint256(keccak256(abi.encode(seed, i))) % n];
            _seat(jobId, job, members, cand);
        }
        for (uint256 i; i < n && members.length < want; ++i) {
            _seat(jobId, job, members, _active[(seed + i) % n]);
        }
        uint64 commitEnd = uint64(block.timestamp) + commitWindow;
        uint64 revealEnd = commitEnd + revealWindow;
        d.commitEnd = commitEnd;
        d.revealEnd = revealEnd;
        d.phase = Phase.Voting;
        emit CommitteeDrawn(jobId, members, commitEnd, revealEnd);
    }

    /// @notice Commit a hidden vote: keccak256(abi.encode(jobId, member, providerAtFault, salt)).
    /// @param jobId the job
    /// @param commitment the hidden vote
    function commitVote(uint64 jobId, bytes32 commitment) external {
        Dispute storage d = _disputes[jobId];
        if (d.phase != Phase.Voting) revert WrongPhase(jobId, d.phase);
        if (block.timestamp > d.commitEnd) revert CommitClosed(d.commitEnd);
        Ballot storage b = _ballots[jobId][msg.sender];
        if (!b.member) revert NotMember(jobId, msg.sender);
        if (b.commitment != bytes32(0)) revert AlreadyCommitted(jobId, msg.sender);
        if (commitment == bytes32(0)) revert ZeroAmount();
        b.commitment = commitment;
        d.commits += 1;
        emit VoteCommitted(jobId, msg.sender);
    }

    /// @notice Reveal a committed vote. Open after the commit window, or as soon as every
    ///         member has committed; closes at revealEnd.
    /// @param jobId the job
    /// @param providerAtFault the vote
    /// @param salt the secret used in the commitment
    function revealVote(uint64 jobId, bool providerAtFault, bytes32 salt) external {
        Dispute storage d = _disputes[jobId];
        if (d.phase != Phase.Voting) revert WrongPhase(jobId, d.phase);
        if (block.timestamp <= d.commitEnd && d.commits < _members[jobId].length) {
            revert RevealNotOpen(d.commitEnd);
        }
        if (block.timestamp > d.revealEnd) revert RevealClosed(d.revealEnd);
        Ballot storage b = _ballots[jobId][msg.sender];
        if (!b.member) revert NotMember(jobId, msg.sender);
        if (b.commitment == bytes32(0)) revert NoCommitment(jobId, msg.sender);
        if (b.revealed) revert AlreadyRevealed(jobId, msg.sender);
        if (voteCommitment(jobId, msg.sender, providerAtFault, salt) != b.commitment) {
            revert BadReveal(jobId, msg.sender);
        }
        b.revealed = true;
        b.providerAtFault = providerAtFault;
        d.reveals += 1;
        if (providerAtFault) d.faultVotes += 1;
        emit VoteRevealed(jobId, msg.sender, providerAtFault);
    }

    /// @notice Tally and resolve (anyone), after the reveal window or once every member has
    ///         revealed. Majority of revealed votes decides; a tie keeps the result.
    ///         Non-revealers are penalised, winners rewarded, then the escrow is called. If
    ///         the job already left Disputed (an equivocation proof), the dispute is
    ///         cancelled with no penalties or rewards.
    /// @param job the disputed job struct
    function finalizeDispute(IGpunetEscrow.Job calldata job) external nonReentrant {
        uint64 jobId = job.jobId;
        Dispute storage d = _disputes[jobId];
        if (d.phase != Phase.Voting) revert WrongPhase(jobId, d.phase);
        if (keccak256(abi.encode(job)) != d.jobHash) revert JobMismatch(jobId);
        address[] storage members = _members[jobId];
        uint256 m = members.length;
        if (block.timestamp <= d.revealEnd && d.reveals < m) revert VotingOpen(d.revealEnd);
        bool live = escrow.laneSlot(job.client, job.lane)
            == escrow.hashJob(job, IGpunetEscrow.JobState.Disputed);
        if (!live) {
            d.phase = Phase.Cancelled;
            for (uint256 i; i < m; ++i) {
                _verifiers[members[i]].openDisputes -= 1;
            }
            emit DisputeCancelled(jobId);
            return;
        }
        uint8 faultVotes = d.faultVotes;
        uint8 reveals = d.reveals;
        bool providerAtFault = uint256(faultVotes) * 2 > reveals;
        uint256 winners = providerAtFault ? faultVotes : reveals - faultVotes;
        d.phase = Phase.Resolved;
        uint256 pool = _penalise(jobId, members);
        _reward(jobId, members, providerAtFault, winners, pool);
        emit DisputeResolved(jobId, providerAtFault, faultVotes, reveals);
        escrow.resolve(job, providerAtFault);
    }

    // ================================================================ views

    /// @notice The commitment a member must submit for a vote.
    /// @param jobId the job
    /// @param member the member
    /// @param providerAtFault the vote
    /// @param salt a fresh 32-byte secret
    /// @return the commitment
    function voteCommitment(uint64 jobId, address member, bool providerAtFault, bytes32 salt)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(jobId, member, providerAtFault, salt));
    }

    /// @notice A dispute's record.
    /// @param jobId the job
    /// @return the dispute
    function dispute(uint64 jobId) external view returns (Dispute memory) {
        return _disputes[jobId];
    }

    /// @notice A dispute's committee.
    /// @param jobId the job
    /// @return the members in draw order
    function members(uint64 jobId) external view returns (address[] memory) {
        return _members[jobId];
    }

    /// @notice A member's ballot.
    /// @param jobId the job
    /// @param member the member
    /// @return the ballot
    function ballot(uint64 jobId, address member) external view returns (Ballot memory) {
        return _ballots[jobId][member];
    }

    /// @notice A verifier's record.
    /// @param verifier the verifier
    /// @return the record
    function verifierOf(address verifier) external view returns (Verifier memory) {
        return _verifiers[verifier];
    }

    /// @notice Whether a verifier can currently be drawn.
    /// @param verifier the verifier
    /// @return true if in the active set
    function isActive(address verifier) external view returns (bool) {
        return _activeIndex[verifier] != 0;
    }

    /// @notice Number of verifiers that can be drawn.
    /// @return the active set's size
    function activeCount() external view returns (uint256) {
        return _active.length;
    }

    // ================================================================ internals

    /// @dev Seat `cand` unless already seated or a party to the job.
    function _seat(
        uint64 jobId,
        IGpunetEscrow.Job calldata job,
        address[] storage members_,
        address cand
    ) private {
        if (cand == job.provider || cand == job.client || cand == job.challenger) return;
        Ballot storage b = _ballots[jobId][cand];
        if (b.member) return;
        b.member = true;
        members_.push(cand);
        _verifiers[cand].openDisputes += 1;
    }

    /// @dev Take noVotePenalty from every member that did not reveal; returns the pool.
    function _penalise(uint64 jobId, address[] storage members_) private returns (uint256 pool) {
        uint256 m = members_.length;
        for (uint256 i; i < m; ++i) {
            address a = members_[i];
            Verifier storage v = _verifiers[a];
            v.openDisputes -= 1;
            if (_ballots[jobId][a].revealed) continue;
            uint96 s = v.stake;
            uint96 p = noVotePenalty < s ? uint96(noVotePenalty) : s;
            if (p == 0) continue;
            s -= p;
            v.stake = s;
            pool += p;
            if (s < minStake) _removeActive(a);
            emit VerifierPenalized(jobId, a, p);
        }
    }

    /// @dev Split `pool` evenly among winning voters, plus voteReward each from the
    ///      reserve while it lasts; undistributed remainders go to the reserve.
    function _reward(
        uint64 jobId,
        address[] storage members_,
        bool providerAtFault,
        uint256 winners,
        uint256 pool
    ) private {
        uint256 reserve = rewardReserve + pool;
        if (winners == 0) {
            rewardReserve = reserve;
            return;
        }
        uint256 share = pool / winners;
        uint256 m = members_.length;
        for (uint256 i; i < m; ++i) {
            address a = members_[i];
            Ballot storage b = _ballots[jobId][a];
            if (!b.revealed || b.providerAtFault != providerAtFault) continue;
            uint256 fromReserve = reserve - pool < voteReward ? reserve - pool : voteReward;
            uint256 r = share + fromReserve;
            reserve -= r;
            pool -= share;
            balanceOf[a] += r;
            emit VerifierRewarded(jobId, a, r);
        }
        rewardReserve = reserve;
    }

    /// @dev The job must be Disputed on the escrow with exactly this struct.
    function _checkDisputed(IGpunetEscrow.Job calldata job) private view {
        bytes32 slot = escrow.laneSlot(job.client, job.lane);
        if (slot != escrow.hashJob(job, IGpunetEscrow.JobState.Disputed)) {
            revert NotDisputed(job.jobId);
        }
    }

    function _removeActive(address a) private {
        uint256 idx = _activeIndex[a];
        if (idx == 0) return;
        uint256 last = _active.length;
        if (idx != last) {
            address moved = _active[last - 1];
            _active[idx - 1] = moved;
            _activeIndex[moved] = idx;
        }
        _active.pop();
        delete _activeIndex[a];
    }
}
