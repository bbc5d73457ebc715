"""benchmarks/api_bench.py's paired rounds: each round's share is the API's rate over the floor's in that round."""

from __future__ import annotations

import sys

from configuration.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import api_bench


def sweeps(*rates: tuple[float, float]):
    """A sweep function that answers the next round's (8 connections, 32 connections) rates each call."""
    rounds = iter(rates)
    return lambda: [{"connections": c, "rps": r} for c, r in zip((8, 32), next(rounds))]


def test_each_round_is_compared_with_its_own_floor_and_the_median_is_of_the_rounds():
    floor = sweeps((8000, 9000), (5000, 10000), (10000, 8000))
    api = sweeps((4000, 3600), (3000, 3000), (4500, 4000))
    paired = api_bench.paired_rounds(3, floor, api)
    # By hand: 4000/8000, 3000/5000, 4500/10000 and 3600/9000, 3000/10000, 4000/8000.
    assert paired["shares"] == {"8": [0.5, 0.6, 0.45], "32": [0.4, 0.3, 0.5]}
    assert paired["median"] == {"8": 0.5, "32": 0.4}
    # The best of each side, compared across rounds, would have said 4500/10000 = 45 % and 4000/10000 = 40 %.
    assert len(paired["rounds"]) == 3 and paired["rounds"][1]["floor"][0]["rps"] == 5000


def test_the_floor_is_swept_before_the_api_in_every_round():
    order: list[str] = []

    def floor():
        order.append("floor")
        return [{"connections": 8, "rps": 2.0}]

    def api():
        order.append("api")
        return [{"connections": 8, "rps": 1.0}]

    api_bench.paired_rounds(2, floor, api)
    assert order == ["floor", "api", "floor", "api"]
