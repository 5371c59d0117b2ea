"""The closed loop accepts its path and refuses every other move with a clear message."""

from __future__ import annotations

import itertools

import pytest

from alerts.cases import ALLOWED, CaseError, Stage, check_transition


def test_full_loop_and_rework() -> None:
    path = [
        Stage.DETECTED,
        Stage.FILED,
        Stage.DISPATCHED,
        Stage.HANDLED,
        Stage.VERIFIED,
        Stage.HANDLED,
        Stage.VERIFIED,
        Stage.CLOSED,
    ]
    for a, b in itertools.pairwise(path):
        check_transition(a, b)


def test_every_other_move_is_refused() -> None:
    for a, b in itertools.product(Stage, Stage):
        if b in ALLOWED[a]:
            continue
        with pytest.raises(CaseError, match="cannot move"):
            check_transition(a, b)


def test_message_names_allowed_moves_in_both_languages() -> None:
    with pytest.raises(CaseError) as info:
        check_transition(Stage.FILED, Stage.CLOSED)
    assert "from filed (立案) to closed (结案); allowed: dispatched (派遣)" in str(info.value)
