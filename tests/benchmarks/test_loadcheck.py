"""benchmarks.loadcheck's bursts: the kinds of search take turns, in alternating order."""

from __future__ import annotations

import threading

from benchmarks.loadcheck import search_bursts


def test_bursts_of_each_kind_take_turns_in_alternating_order():
    calls: list[tuple[str, int]] = []
    lock = threading.Lock()

    def kind(name: str):
        def search(i: int, r: int) -> dict:
            with lock:
                calls.append((name, r))
            return {"eat": {"hits": [None] * 3}}

        return search

    out = search_bursts({"ui": kind("ui"), "api": kind("api")}, 4, 3, "eat", 3)
    # one burst of 4 calls at a time; order by round: warm-up (-1) api, ui; 0 ui, api; ...
    bursts = [calls[i] for i in range(0, len(calls), 4)]
    assert all(calls[i : i + 4] == [calls[i]] * 4 for i in range(0, len(calls), 4))
    assert bursts == [
        ("api", -1), ("ui", -1), ("ui", 0), ("api", 0), ("api", 1), ("ui", 1), ("ui", 2), ("api", 2)
    ]  # fmt: skip
    for name in ("ui", "api"):
        assert out[name]["succeeded"] == 12 and out[name]["failed"] == 0  # warm-up not counted
        assert len(out[name]["burst_wall_s"]) == 3


def test_a_wrong_answer_is_counted_as_a_failure_of_its_kind_only():
    ok = lambda i, r: {"eat": {"hits": [None] * 2}}  # noqa: E731
    short = lambda i, r: {"eat": {"hits": [None]}}  # noqa: E731
    out = search_bursts({"ui": short, "api": ok}, 2, 2, "eat", 2)
    assert out["ui"]["succeeded"] == 0 and out["ui"]["failed"] == 6
    assert "wrong number of hits" in out["ui"]["errors"][0]
    assert out["api"]["succeeded"] == 4 and out["api"]["failed"] == 0
