"""The device index's id -> position lookup, with and without ingest's position hints."""

from __future__ import annotations

import numpy as np

from cityops.catalog import Kind
from stream.registry import DeviceIndex


def _index(ids: list[str]) -> DeviceIndex:
    return DeviceIndex.build(Kind.STREETLIGHT, ids, np.zeros(len(ids), dtype=np.int64))


IDS = [f"L{i:04d}" for i in range(0, 1_000, 2)] + ["路灯-7", "Z"]


def _fresh(ids: list[str]) -> np.ndarray:
    # new string objects, as ingest decodes them from each message
    return np.array(["".join(list(s)) for s in ids], dtype=object)


def test_lookup_without_hints_finds_registered_ids_and_marks_the_rest() -> None:
    index = _index(IDS)
    query = _fresh(["L0002", "L0003", "路灯-7", "", "Z", "L0998"])
    assert index.lookup(query).tolist() == [1, -1, 501, -1, 500, 499]  # "Z" sorts before "路"


def test_right_hints_are_taken_and_wrong_ones_looked_up() -> None:
    index = _index(IDS)
    rng = np.random.default_rng(11)
    want = rng.integers(0, len(IDS), 2_000)
    query = _fresh([str(index.ids[i]) for i in want] + ["nope", "L0001"])
    expect = [*want.tolist(), -1, -1]
    right = np.array(expect, dtype=np.int64)
    assert index.lookup(query, right).tolist() == expect
    # every kind of wrong hint: another device's place, out of range, negative, none at all
    wrong = right.copy()
    wrong[::3] = (wrong[::3] + 1) % len(IDS)
    wrong[1::7] = len(IDS) + 5
    wrong[2::11] = -1
    wrong[-2:] = [0, 3]
    assert index.lookup(query, wrong).tolist() == expect
    assert index.lookup(query, np.full(len(query), -1)).tolist() == expect
    assert index.lookup(query).tolist() == expect


def test_hints_into_an_empty_index_find_nothing() -> None:
    index = _index([])
    assert index.lookup(_fresh(["L0002"]), np.array([0])).tolist() == [-1]
    assert index.lookup([], np.array([], dtype=np.int64)).shape == (0,)
