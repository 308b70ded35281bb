"""Does cheating pay? Monte Carlo + closed form for a provider that cheats on a fraction of jobs.

Model (one provider, jobs in sequence; money in units of one job's payment):

* each job pays ``price`` and costs the provider ``cost`` to run honestly; a
  cheated job is not run (saves ``cost``) and returns a wrong output;
* every job is re-run by at least one verifier with probability ``sampling``
  (several verifiers sampling independently at rate r give 1 - (1 - r)^k);
  a re-run of a cheated job is a mismatch with probability ``detect`` (1 for
  the ``exact`` and ``gpu-deterministic`` tiers; for ``tolerance`` it is the
  chance the perturbation exceeds the model's bound);
* a mismatch is challenged with a bond and the committee vote finds the
  provider at fault (honest majority): the provider loses ``stake`` (all of
  it: to the client and the challenger), the job's payment is refunded, and it
  leaves the market;
* an honest provider is challenged wrongly with probability
  ``false_positive`` per verified job (0 when the tolerance bound exceeds the
  measured spread); a false challenge loses the vote, the provider keeps its
  stake and collects the challenger's bond.

Prints, for the given parameters: the probability a cheater is caught within
``window`` jobs, its expected profit over ``horizon`` jobs against an honest
provider's, and the smallest sampling rate that meets the goal
(caught within 100 jobs with p >= 0.99 at a 5 % cheating rate).

    .venv/bin/python scripts/sim/cheating.py [--sampling 0.9] [--stake 200] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics

CHEAT_RATES = (0.01, 0.05, 0.10, 0.25, 0.50, 1.00)


@dataclasses.dataclass(frozen=True)
class Params:
    """Economic parameters, in units of one job's payment."""

    price: float = 1.0
    cost: float = 0.6
    stake: float = 200.0
    bond: float = 5.0
    sampling: float = 0.92
    detect: float = 1.0
    false_positive: float = 0.0
    window: int = 100
    horizon: int = 1000
    trials: int = 20_000
    seed: int = 7


def caught_within(p: Params, cheat_rate: float, jobs: int) -> float:
    """Closed form: P(at least one cheated job is sampled and detected in ``jobs`` jobs)."""
    hazard = cheat_rate * p.sampling * p.detect
    return 1.0 - (1.0 - hazard) ** jobs


def expected_profit(p: Params, cheat_rate: float) -> float:
    """Closed form expected profit over the horizon (stops at the first detection)."""
    hazard = cheat_rate * p.sampling * p.detect
    if hazard >= 1.0:
        return -p.stake
    # a job that was not caught was a cheat with probability f(1 - s d) / (1 - f s d)
    cheat_given_survived = cheat_rate * (1.0 - p.sampling * p.detect) / (1.0 - hazard)
    per_job = p.price - p.cost + cheat_given_survived * p.cost
    if hazard == 0.0:
        return per_job * p.horizon
    survive = 1.0 - hazard
    # E[jobs completed before the one that is caught], truncated at the horizon
    expected_jobs = (1.0 - survive**p.horizon) / hazard - (1.0 - survive**p.horizon)
    caught = 1.0 - survive**p.horizon
    # the caught job: not run (no cost), its payment refunded, the stake lost
    return per_job * expected_jobs - caught * p.stake


def simulate(p: Params, cheat_rate: float, rng: random.Random) -> tuple[float, bool, int]:
    """One provider over the horizon: (profit, caught within the window, jobs run)."""
    profit = 0.0
    for job in range(1, p.horizon + 1):
        cheats = rng.random() < cheat_rate
        verified = rng.random() < p.sampling
        if cheats and verified and rng.random() < p.detect:
            return profit - p.stake, job <= p.window, job  # payment refunded, stake slashed
        if not cheats and verified and rng.random() < p.false_positive:
            profit += p.bond  # a false challenge: the provider wins the vote and the bond
        profit += p.price - (0.0 if cheats else p.cost)
    return profit, False, p.horizon


def min_sampling_for_goal(p: Params, cheat_rate: float = 0.05, target: float = 0.99) -> float:
    """Smallest sampling rate with P(caught within the window) >= target."""
    hazard = 1.0 - (1.0 - target) ** (1.0 / p.window)
    return min(1.0, hazard / (cheat_rate * p.detect))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    for field in dataclasses.fields(Params):
        flag = f"--{field.name.replace('_', '-')}"
        parser.add_argument(flag, type=type(field.default), default=field.default)
    p = Params(**{k.replace("-", "_"): v for k, v in vars(parser.parse_args()).items()})
    rng = random.Random(p.seed)
    honest = (p.price - p.cost) * p.horizon
    print(f"# parameters: {p}")
    print(f"# honest provider profit over {p.horizon} jobs: {honest:,.1f}")
    print(
        f"| cheat rate | P(caught ≤ {p.window} jobs) closed form | Monte Carlo | "
        f"expected profit (closed form) | Monte Carlo median | Monte Carlo mean | vs honest |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate in CHEAT_RATES:
        runs = [simulate(p, rate, rng) for _ in range(p.trials)]
        caught = sum(1 for _, c, _ in runs if c) / p.trials
        profits = [x for x, _, _ in runs]
        mean = statistics.fmean(profits)
        print(
            f"| {rate:.0%} | {caught_within(p, rate, p.window):.4f} | {caught:.4f} | "
            f"{expected_profit(p, rate):,.1f} | {statistics.median(profits):,.1f} | "
            f"{mean:,.1f} | {mean - honest:+,.1f} |"
        )
    honest_runs = [simulate(p, 0.0, rng) for _ in range(p.trials)]
    slashed = sum(1 for _, _, n in honest_runs if n < p.horizon)
    print(f"\nhonest providers slashed: {slashed} of {p.trials}")
    need = min_sampling_for_goal(p)
    print(
        f"smallest sampling rate for 'caught within {p.window} jobs with p >= 0.99 at 5 % "
        f"cheating': {need:.4f} (configured {p.sampling})"
    )
    breakeven = (p.cost / p.sampling) if p.sampling else math.inf
    print(
        f"stake above which cheating loses money in expectation (≈ cost/sampling): {breakeven:.2f}"
    )
    goal = caught_within(p, 0.05, p.window) >= 0.99 and expected_profit(p, 0.05) < honest
    print(f"goal met with these parameters: {'yes' if goal else 'NO'}")


if __name__ == "__main__":
    main()
