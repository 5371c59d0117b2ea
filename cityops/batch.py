"""The committed batch that ingest hands to the next stages, and the consumer protocol.

A batch is columnar so the stream core's numba kernels can work on it without copying: per kind,
one array of device ids, timestamps and one array per catalog field. Encoding (chosen so that
kernels never see Python objects):

- ``float`` fields: float64, NaN where the reading did not carry the field;
- ``bool`` fields: int8, 1/0, -1 where missing;
- ``enum`` fields: int16 code = index of the value in ``FieldSpec.allowed``, -1 where missing
  (``KindBatch.decode`` turns codes back into strings);
- ``int`` fields: int64, ``INT_MISSING`` where missing;
- ``str`` fields: object arrays of str or None (not for kernels).

Ingest calls every consumer after the batch is committed, in commit order, in the ingest process
(no second trip through the database). A consumer must not block for long and must not raise;
ingest logs and counts a consumer's exception and carries on — the data is already stored.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from cityops import catalog
from cityops.catalog import FieldSpec, FieldType, Kind

INT_MISSING = np.iinfo(np.int64).min

_DTYPES: dict[FieldType, Any] = {
    FieldType.FLOAT: np.float64,
    FieldType.BOOL: np.int8,
    FieldType.ENUM: np.int16,
    FieldType.INT: np.int64,
    FieldType.STR: object,
    FieldType.DATE: object,
}


def column_dtype(spec: FieldSpec) -> Any:
    """The NumPy dtype a field is carried in."""
    return _DTYPES[spec.type]


def encode_value(spec: FieldSpec, value: Any) -> Any:
    """One validated value in its column encoding (see the module docstring)."""
    if spec.type is FieldType.FLOAT:
        return np.nan if value is None else float(value)
    if spec.type is FieldType.BOOL:
        return -1 if value is None else int(bool(value))
    if spec.type is FieldType.ENUM:
        return -1 if value is None else enum_code(spec, value)
    if spec.type is FieldType.INT:
        return INT_MISSING if value is None else int(value)
    return value


@functools.cache
def _enum_codes(spec: FieldSpec) -> dict[str, int]:
    return {v: i for i, v in enumerate(spec.allowed or ())}


def encode_column(spec: FieldSpec, values: Sequence[Any]) -> np.ndarray:
    """Validated values (None: missing) as one column in its encoding, as ``encode_value`` does
    value by value, in one comprehension per column (ingest builds every committed batch)."""
    t = spec.type
    if t is FieldType.FLOAT:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if t is FieldType.BOOL:
        return np.array([-1 if v is None else (1 if v else 0) for v in values], dtype=np.int8)
    if t is FieldType.ENUM:
        if spec.allowed is None:
            raise ValueError(f"{spec.name} is not an enum field")
        codes = _enum_codes(spec)
        try:
            return np.array([-1 if v is None else codes[v] for v in values], dtype=np.int16)
        except KeyError as err:
            raise ValueError(f"{spec.name}: {err.args[0]!r} is not one of its values") from None
    if t is FieldType.INT:
        return np.array([INT_MISSING if v is None else int(v) for v in values], dtype=np.int64)
    col = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        col[i] = v
    return col


def enum_code(spec: FieldSpec, value: str) -> int:
    """Code of an enum value: its index in ``spec.allowed``."""
    if spec.allowed is None:
        raise ValueError(f"{spec.name} is not an enum field")
    return spec.allowed.index(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class KindBatch:
    """The committed readings of one kind, as columns of equal length."""

    kind: Kind
    device_ids: np.ndarray  # object array of str
    ts_ms: np.ndarray  # int64 epoch milliseconds, UTC
    received_ms: np.ndarray  # int64 epoch milliseconds when ingest received the message
    columns: Mapping[str, np.ndarray]
    # int64 per reading: where ingest's registry copy says the device sits in the stream core's
    # device index, -1 when it does not know. A hint: the stream core checks it against the id
    # and looks up the ids it does not match (stream.registry.DeviceIndex.lookup).
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @classmethod
    def from_rows(
        cls,
        kind: Kind,
        rows: Sequence[tuple[str, int, int, Mapping[str, Any]]],
        *,
        positions: Sequence[int] | None = None,
    ) -> KindBatch:
        """Build a batch from (device_id, ts_ms, received_ms, validated values) rows.

        ``positions``: the device position hints of the rows (``KindBatch.positions``).
        """
        spec = catalog.KINDS[kind]
        columns = {
            f.name: encode_column(f, [row[3].get(f.name) for row in rows]) for f in spec.readings
        }
        return cls(
            kind=kind,
            device_ids=np.array([r[0] for r in rows], dtype=object),
            ts_ms=np.array([r[1] for r in rows], dtype=np.int64),
            received_ms=np.array([r[2] for r in rows], dtype=np.int64),
            columns=columns,
            positions=None if positions is None else np.array(positions, dtype=np.int64),
        )

    @classmethod
    def from_stored(
        cls,
        kind: Kind,
        rows: Sequence[Sequence[Any]],
        *,
        positions: Sequence[int] | None = None,
    ) -> KindBatch:
        """Build a batch from ingest's stored rows: (device_id, ts_ms, *the kind's catalog fields
        in catalog order, received_ms), as written to the database."""
        spec = catalog.KINDS[kind]
        columns = {
            f.name: encode_column(f, [row[2 + j] for row in rows])
            for j, f in enumerate(spec.readings)
        }
        return cls(
            kind=kind,
            device_ids=np.array([r[0] for r in rows], dtype=object),
            ts_ms=np.array([r[1] for r in rows], dtype=np.int64),
            received_ms=np.array([r[-1] for r in rows], dtype=np.int64),
            columns=columns,
            positions=None if positions is None else np.array(positions, dtype=np.int64),
        )

    def decode(self, field_name: str, i: int) -> Any:
        """Row ``i`` of a column back as a Python value (None where missing)."""
        spec = catalog.KINDS[self.kind].reading_field(field_name)
        if spec is None:
            raise KeyError(field_name)
        raw = self.columns[field_name][i]
        if spec.type is FieldType.FLOAT:
            return None if np.isnan(raw) else float(raw)
        if spec.type is FieldType.BOOL:
            return None if raw < 0 else bool(raw)
        if spec.type is FieldType.ENUM:
            return None if raw < 0 or spec.allowed is None else spec.allowed[int(raw)]
        if spec.type is FieldType.INT:
            return None if raw == INT_MISSING else int(raw)
        return raw


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusChange:
    """A device's online/offline report (birth message or last will)."""

    device_id: str
    kind: Kind
    online: bool
    ts: datetime


CAUSES = ("", "value", "flat", "noise")  # AnomalyScores.cause codes


@dataclass(frozen=True, kw_only=True, slots=True)
class AnomalyScores:
    """The stream core's anomaly score of each reading of one kind's followed field.

    ``score`` is float64 per reading of the kind's ``KindBatch`` (same order), NaN where the
    reading was not scored (warm-up, late, duplicate, value missing); ``cause`` is an int8 code
    into ``CAUSES``: which statistic scored highest (value off its baseline, a run of repeated
    values, a burst of noise).
    """

    field: str
    score: np.ndarray
    cause: np.ndarray


@dataclass(frozen=True, kw_only=True, slots=True)
class CommittedBatch:
    """Everything one ingest commit stored, handed to the consumers after the commit."""

    seq: int
    committed_at: datetime
    readings: Mapping[Kind, KindBatch] = field(default_factory=dict)
    complaints: Sequence[Mapping[str, Any]] = ()
    status_changes: Sequence[StatusChange] = ()
    # Filled in by the stream core (the consumer that runs before the alert engine) with the
    # anomaly scores of this batch's readings; the alert engine reads them and scores nothing.
    anomaly: dict[Kind, AnomalyScores] = field(default_factory=dict)

    @property
    def reading_count(self) -> int:
        """Number of readings over all kinds."""
        return sum(len(b) for b in self.readings.values())


def now_utc() -> datetime:
    """Aware UTC now (a function so callers can pass a clock instead)."""
    return datetime.now(UTC)


class BatchConsumer(Protocol):
    """Receives each committed batch, in commit order, in the ingest process."""

    def on_batch(self, batch: CommittedBatch) -> None:
        """Handle one committed batch; must not raise and must not block for long."""
