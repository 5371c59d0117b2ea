"""What every device model shares: the per-tick context and the step result."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cityops.catalog import Kind
from simulators.faults import FaultType
from simulators.scenario import DeviceTable

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(kw_only=True)
class TickInfo:
    """One simulated tick as a model sees it."""

    tick: int
    t_ms: int
    dt_s: float
    rng: np.random.Generator
    outdoor_c: float
    rain_mm_h: float
    local_hour: float
    faults: Mapping[FaultType, BoolArray]

    def fault(self, fault_type: FaultType, n: int) -> BoolArray:
        """Which devices have ``fault_type`` active in this tick."""
        mask = self.faults.get(fault_type)
        return mask if mask is not None else np.zeros(n, dtype=np.bool_)


@dataclass(kw_only=True)
class StepResult:
    """The state of every device after a tick.

    ``columns`` hold one value per device for each reading field (object arrays may hold None,
    meaning the field is omitted); ``changed`` marks devices that report now, on change, whatever
    their periodic interval says.
    """

    columns: dict[str, npt.NDArray[np.generic]]
    changed: BoolArray


class DeviceModel(ABC):
    """A vectorised model of every device of one kind."""

    kind: Kind

    def __init__(self, table: DeviceTable, interval_s: npt.NDArray[np.int64]) -> None:
        self.table = table
        self.n = len(table)
        self.interval_s = interval_s

    @abstractmethod
    def step(self, info: TickInfo) -> StepResult:
        """Advance every device by one tick and return their readings."""

    def affected(self) -> BoolArray | None:
        """Devices whose state still shows a fault's effect, or None if faults leave none.

        A model whose faults change slow physical state (a room that cooled) overrides this, so
        the simulation can record when a fault's effect ends, which may be after the fault does.
        """
        return None


def init_rng(seed: int, kind: Kind) -> np.random.Generator:
    """The generator for a model's initial state (independent of the registry's)."""
    from simulators.scenario import KIND_ORDER

    return np.random.default_rng(np.random.SeedSequence([seed, KIND_ORDER.index(kind), 1_000]))
