"""The economic simulation: closed form agrees with Monte Carlo; defaults meet the goal."""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("cheating", ROOT / "scripts" / "sim" / "cheating.py")
assert _spec and _spec.loader
sim = importlib.util.module_from_spec(_spec)
sys.modules["cheating"] = sim
_spec.loader.exec_module(sim)


def test_closed_form_matches_monte_carlo() -> None:
    p = sim.Params(trials=4000, horizon=300)
    rng = random.Random(1)
    for rate in (0.02, 0.05, 0.3):
        runs = [sim.simulate(p, rate, rng) for _ in range(p.trials)]
        caught = sum(1 for _, c, _ in runs if c) / p.trials
        mean = statistics.fmean(x for x, _, _ in runs)
        assert abs(caught - sim.caught_within(p, rate, p.window)) < 0.03
        assert abs(mean - sim.expected_profit(p, rate)) < 0.05 * p.stake


def test_default_parameters_meet_the_goal() -> None:
    p = sim.Params()
    honest = (p.price - p.cost) * p.horizon
    for rate in (0.05, 0.1, 0.5, 1.0):  # "cheating on >= 5 % of jobs"
        assert sim.caught_within(p, rate, 100) >= 0.99
        assert sim.expected_profit(p, rate) < 0 < honest


def test_goal_fails_when_sampling_is_too_low() -> None:
    p = dataclasses.replace(sim.Params(), sampling=0.5)
    assert sim.caught_within(p, 0.05, 100) < 0.99
    assert abs(sim.min_sampling_for_goal(p) - 0.9001) < 1e-3


def test_honest_provider_is_never_slashed() -> None:
    p = sim.Params(horizon=500)
    rng = random.Random(2)
    assert all(n == p.horizon for _, _, n in (sim.simulate(p, 0.0, rng) for _ in range(300)))
