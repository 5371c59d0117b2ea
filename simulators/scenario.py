"""Scenarios: a generated district layout (roads, cabinets, compounds, sites) and its registry.

The 43 reference streets/townships come from ``cityops/data/chaoyang_areas.csv``; their centroids
and land areas are themselves generated (see docs/storage.md), and everything placed around them
here -- roads, lamp positions, compounds, charging sites -- is invented to look plausible, not
surveyed. Generation is vectorised with NumPy and seeded: one ``SeedSequence`` per kind, so the
same seed always yields the same registry, and the size of one kind never shifts another.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from cityops import catalog, registry
from cityops.catalog import Kind

KIND_ORDER: tuple[Kind, ...] = (Kind.STREETLIGHT, Kind.MANHOLE, Kind.HEATING, Kind.CHARGER)
KIND_PREFIX: Mapping[Kind, str] = {
    Kind.STREETLIGHT: "sl",
    Kind.MANHOLE: "mh",
    Kind.HEATING: "ht",
    Kind.CHARGER: "ch",
}
DEVICE_COLUMNS: tuple[str, ...] = (
    "device_id",
    "kind",
    "area_code",
    "lat",
    "lon",
    "gateway_id",
    "install_date",
    "status",
    "road",
    "schedule_class",
    "rated_power_w",
    "cabinet_id",
    "owner_unit",
    "well_depth_cm",
    "overflow_level_cm",
    "heated_area_m2",
    "building",
    "compound",
    "heat_company",
    "site_id",
    "power_kw",
    "public",
    "connector_no",
)
# Real Chaoyang road names; the pilot covers sit on the first three (domain.md). Which area each
# road is assigned to is a plausible guess, not a survey.
PILOT_ROADS: tuple[tuple[str, str], ...] = (
    ("朝阳路", "CY-BLZ"),
    ("朝阳北路", "CY-LLT"),
    ("通惠河北路", "CY-GBD"),
    ("建国路", "CY-JW"),
    ("东三环中路", "CY-HJL"),
    ("京顺路", "CY-JT"),
    ("望京街", "CY-WJ"),
    ("姚家园路", "CY-DF"),
    ("广顺北大街", "CY-WJ"),
    ("北苑路", "CY-DT"),
)
_ROAD_SUFFIXES = ("路", "街", "大街", "北路", "南路", "东路", "西路", "中路", "一街", "二街")
_HEAT_COMPANIES = ("北京热力集团", "朝阳区供暖服务中心", "华源热力", "京能热力", "金房暖通")
_LAMP_SPACING_M = 35.0
_COVER_SPACING_M = 60.0
_M_PER_DEG_LAT = 111_320.0
_EPOCH_DAY_2019 = 17_897  # 2019-01-01 as days since 1970-01-01
_INSTALL_SPAN_DAYS = 1_641  # up to 2023-06-30


@dataclass(frozen=True, kw_only=True, slots=True)
class Area:
    """A reference street/township and the generated neighbourhood devices are placed in."""

    code: str
    name_zh: str
    lon: float
    lat: float
    land_area_km2: float

    @property
    def short_name(self) -> str:
        """The name without its 街道/地区/乡 suffix, for invented road and compound names."""
        for suffix in ("街道", "地区", "乡"):
            if self.name_zh.endswith(suffix):
                return self.name_zh[: -len(suffix)]
        return self.name_zh


def reference_areas() -> list[Area]:
    """The 43 Chaoyang units shipped with cityops (their centroids are generated)."""
    out = []
    for record in registry.reference_area_records():
        v = registry.validate_area(record)
        out.append(
            Area(
                code=v["code"],
                name_zh=v["name_zh"],
                lon=float(v["lon"]),
                lat=float(v["lat"]),
                land_area_km2=float(v["land_area_km2"] or 5.0),
            )
        )
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ScenarioSpec:
    """How many devices of each kind a scenario has, and how they are grouped."""

    name: str
    mains_lamps: int
    solar_lamps: int
    manholes: int
    heating: int
    chargers: int
    lamps_per_cabinet: int = 50
    lamps_per_road: int = 70
    rooms_per_compound: int = 50
    connectors_per_site: int = 10
    pilot_roads: bool = False

    @property
    def total(self) -> int:
        """Number of devices in the scenario."""
        return self.mains_lamps + self.solar_lamps + self.manholes + self.heating + self.chargers

    def count(self, kind: Kind) -> int:
        """Number of devices of ``kind``."""
        return {
            Kind.STREETLIGHT: self.mains_lamps + self.solar_lamps,
            Kind.MANHOLE: self.manholes,
            Kind.HEATING: self.heating,
            Kind.CHARGER: self.chargers,
        }[kind]


SCENARIOS = ("pilot", "district", "city")


def scenario_spec(name: str, devices: int | None = None) -> ScenarioSpec:
    """The named scenario; ``devices`` sizes ``city`` (default 1,000,000) or scales the others."""
    if name == "pilot":
        spec = ScenarioSpec(
            name="pilot",
            mains_lamps=1_600,
            solar_lamps=1_900,
            manholes=300,
            heating=400,
            chargers=300,
            pilot_roads=True,
        )
    elif name == "district":
        spec = ScenarioSpec(
            name="district",
            mains_lamps=16_800,
            solar_lamps=7_200,
            manholes=3_000,
            heating=12_000,
            chargers=9_000,
            rooms_per_compound=60,
        )
    elif name == "city":
        total = 1_000_000 if devices is None else devices
        return _city_spec(total)
    else:
        raise ValueError(f"unknown scenario {name!r}; use one of {', '.join(SCENARIOS)}")
    if devices is not None:
        return _scaled(spec, devices)
    return spec


def _city_spec(total: int) -> ScenarioSpec:
    if total < 10:
        raise ValueError("the city scenario needs at least 10 devices")
    chargers = int(total * 0.60)
    lamps = int(total * 0.22)
    heating = int(total * 0.13)
    manholes = total - chargers - lamps - heating
    return ScenarioSpec(
        name="city",
        mains_lamps=lamps * 7 // 10,
        solar_lamps=lamps - lamps * 7 // 10,
        manholes=manholes,
        heating=heating,
        chargers=chargers,
        rooms_per_compound=80,
        connectors_per_site=12,
    )


def _scaled(spec: ScenarioSpec, devices: int) -> ScenarioSpec:
    if devices < 5:
        raise ValueError("a scenario needs at least 5 devices")
    f = devices / spec.total
    counts = [
        max(1, round(getattr(spec, n) * f))
        for n in ("mains_lamps", "solar_lamps", "manholes", "heating", "chargers")
    ]
    counts[counts.index(max(counts))] += devices - sum(counts)  # exactly ``devices`` in all
    return ScenarioSpec(
        name=spec.name,
        mains_lamps=counts[0],
        solar_lamps=counts[1],
        manholes=counts[2],
        heating=counts[3],
        chargers=counts[4],
        lamps_per_cabinet=spec.lamps_per_cabinet,
        lamps_per_road=spec.lamps_per_road,
        rooms_per_compound=max(2, min(spec.rooms_per_compound, counts[3] // 2 or 2)),
        connectors_per_site=spec.connectors_per_site,
        pilot_roads=spec.pilot_roads,
    )


@dataclass(kw_only=True)
class DeviceTable:
    """All devices of one kind as columns (index i is the i-th device of the kind).

    ``group`` is the fault group a device belongs to (cabinet for mains lamps, compound for rooms,
    site for chargers, road otherwise; -1 for none) and ``group_ids`` names the groups.
    """

    kind: Kind
    device_id: npt.NDArray[np.object_]
    area: npt.NDArray[np.int32]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    gateway: npt.NDArray[np.object_]
    install_day: npt.NDArray[np.int32]
    attrs: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    group: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    group_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.device_id)


@dataclass(kw_only=True)
class Scenario:
    """A generated layout and registry: the areas and one device table per kind."""

    spec: ScenarioSpec
    seed: int
    areas: list[Area]
    tables: dict[Kind, DeviceTable]

    @property
    def total(self) -> int:
        """Number of devices."""
        return sum(len(t) for t in self.tables.values())

    def index(self) -> dict[str, tuple[Kind, int]]:
        """device_id -> (kind, row) for every device (fine up to district sizes)."""
        out: dict[str, tuple[Kind, int]] = {}
        for kind, table in self.tables.items():
            for i, d in enumerate(table.device_id):
                out[str(d)] = (kind, i)
        return out


def _rng(seed: int, kind: Kind, purpose: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, KIND_ORDER.index(kind), purpose]))


def _ids(prefix: str, n: int, width: int) -> npt.NDArray[np.object_]:
    out = np.empty(n, dtype=object)
    out[:] = [f"{prefix}-{i:0{width}d}" for i in range(1, n + 1)]
    return out


def _area_weights(areas: list[Area]) -> npt.NDArray[np.float64]:
    w = np.array([a.land_area_km2 for a in areas], dtype=np.float64)
    return np.asarray(w / w.sum(), dtype=np.float64)


def _points_in_area(
    rng: np.random.Generator, areas: list[Area], area_idx: npt.NDArray[np.int32], spread: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Random points within ``spread`` times the area's equivalent radius of its centroid."""
    lat0 = np.array([a.lat for a in areas])[area_idx]
    lon0 = np.array([a.lon for a in areas])[area_idx]
    radius_m = np.sqrt(np.array([a.land_area_km2 for a in areas]) * 1e6 / np.pi)[area_idx] * spread
    r = radius_m * np.sqrt(rng.random(len(area_idx)))
    theta = rng.random(len(area_idx)) * 2 * np.pi
    dlat = r * np.sin(theta) / _M_PER_DEG_LAT
    dlon = r * np.cos(theta) / (_M_PER_DEG_LAT * np.cos(np.radians(lat0)))
    return lat0 + dlat, lon0 + dlon


@dataclass(kw_only=True)
class _Roads:
    name: list[str]
    area: npt.NDArray[np.int32]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    bearing: npt.NDArray[np.float64]


def _make_roads(
    rng: np.random.Generator, areas: list[Area], n: int, *, pilot: bool, tag: str
) -> _Roads:
    codes = [a.code for a in areas]
    names: list[str] = []
    area_idx = np.empty(n, dtype=np.int32)
    if pilot:
        for i in range(n):
            name, code = PILOT_ROADS[i % len(PILOT_ROADS)]
            names.append(name if i < len(PILOT_ROADS) else f"{name}{tag}{i // len(PILOT_ROADS)}段")
            area_idx[i] = codes.index(code)
    else:
        area_idx[:] = rng.choice(len(areas), size=n, p=_area_weights(areas))
        per_area: dict[int, int] = {}
        for i in range(n):
            k = per_area.get(int(area_idx[i]), 0)
            per_area[int(area_idx[i])] = k + 1
            short = areas[int(area_idx[i])].short_name
            suffix = _ROAD_SUFFIXES[k % len(_ROAD_SUFFIXES)]
            names.append(f"{short}{tag}{suffix}" if k < 10 else f"{short}{tag}{k}号路")
    lat, lon = _points_in_area(rng, areas, area_idx, 0.6)
    return _Roads(name=names, area=area_idx, lat=lat, lon=lon, bearing=rng.random(n) * np.pi)


def _along_roads(
    rng: np.random.Generator, roads: _Roads, road_idx: npt.NDArray[np.int32], spacing_m: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Positions along each road: k-th device on a road sits k*spacing from its start, ±3 m."""
    order = np.argsort(road_idx, kind="stable")
    sorted_roads = road_idx[order]
    starts = np.searchsorted(sorted_roads, sorted_roads, side="left")
    k_sorted = np.arange(len(road_idx)) - starts
    k = np.empty(len(road_idx), dtype=np.float64)
    k[order] = k_sorted
    side = rng.normal(0.0, 3.0, len(road_idx))
    dist = k * spacing_m
    b = roads.bearing[road_idx]
    lat0 = roads.lat[road_idx]
    north = dist * np.sin(b) + side * np.cos(b)
    east = dist * np.cos(b) - side * np.sin(b)
    lat = lat0 + north / _M_PER_DEG_LAT
    lon = roads.lon[road_idx] + east / (_M_PER_DEG_LAT * np.cos(np.radians(lat0)))
    return lat, lon


def _install_days(rng: np.random.Generator, n: int) -> npt.NDArray[np.int32]:
    return (_EPOCH_DAY_2019 + rng.integers(0, _INSTALL_SPAN_DAYS, n)).astype(np.int32)


def _width(n: int) -> int:
    return max(5, len(str(n)))


def _streetlights(spec: ScenarioSpec, areas: list[Area], seed: int) -> DeviceTable:
    rng = _rng(seed, Kind.STREETLIGHT)
    n_mains, n_solar = spec.mains_lamps, spec.solar_lamps
    n = n_mains + n_solar
    # Mains lamps sit on fewer, longer roads behind cabinets; solar lamps on many short roads.
    mains_roads = max(1, n_mains // spec.lamps_per_road)
    solar_roads = max(1, n_solar // max(1, spec.lamps_per_road // 3))
    roads = _make_roads(rng, areas, mains_roads + solar_roads, pilot=False, tag="")
    road_idx = np.empty(n, dtype=np.int32)
    road_idx[:n_mains] = np.sort(rng.integers(0, mains_roads, n_mains))
    road_idx[n_mains:] = mains_roads + np.sort(rng.integers(0, solar_roads, n_solar))
    lat, lon = _along_roads(rng, roads, road_idx, _LAMP_SPACING_M)
    n_cab = max(1, -(-n_mains // spec.lamps_per_cabinet))
    cabinet = np.full(n, -1, dtype=np.int32)
    # Consecutive lamps (same road) share a cabinet, as circuits follow the road.
    cabinet[:n_mains] = (np.arange(n_mains) * n_cab // max(1, n_mains)).astype(np.int32)
    cab_ids = [f"cab-{i:0{_width(n_cab)}d}" for i in range(1, n_cab + 1)]
    cab_arr = np.array([*cab_ids, ""], dtype=object)
    cabinet_id = cab_arr[cabinet]  # -1 -> ""
    cabinet_id[cabinet < 0] = None
    gateway = cabinet_id.copy()
    sched = np.where(np.arange(n) < n_mains, "mains", "solar").astype(object)
    rated = np.where(
        np.arange(n) < n_mains,
        rng.choice(np.array([100.0, 150.0, 200.0, 250.0]), n),
        rng.choice(np.array([30.0, 40.0, 60.0]), n),
    )
    road_names = np.array(roads.name, dtype=object)
    return DeviceTable(
        kind=Kind.STREETLIGHT,
        device_id=_ids("sl", n, _width(n)),
        area=roads.area[road_idx],
        lat=lat,
        lon=lon,
        gateway=gateway,
        install_day=_install_days(rng, n),
        attrs={
            "road": road_names[road_idx],
            "schedule_class": sched,
            "rated_power_w": rated,
            "cabinet_id": cabinet_id,
        },
        group=cabinet,
        group_ids=cab_ids,
    )


def _manholes(spec: ScenarioSpec, areas: list[Area], seed: int) -> DeviceTable:
    rng = _rng(seed, Kind.MANHOLE)
    n = spec.manholes
    n_roads = len(PILOT_ROADS) if spec.pilot_roads else max(1, n // 30)
    roads = _make_roads(rng, areas, n_roads, pilot=spec.pilot_roads, tag="")
    road_idx = np.sort(rng.integers(0, n_roads, n)).astype(np.int32)
    if spec.pilot_roads:
        road_idx = (np.arange(n) * n_roads // n).astype(np.int32)  # 30 covers on each of 10 roads
    lat, lon = _along_roads(rng, roads, road_idx, _COVER_SPACING_M)
    owners = np.array([o.value for o in catalog.OwnerUnit], dtype=object)
    owner_p = np.array([0.35, 0.15, 0.1, 0.1, 0.12, 0.12, 0.06])
    depth = np.round(rng.uniform(120, 400, n), 0)
    overflow = np.round(depth * rng.uniform(0.7, 0.85, n), 0)
    road_names = np.array(roads.name, dtype=object)
    return DeviceTable(
        kind=Kind.MANHOLE,
        device_id=_ids("mh", n, _width(n)),
        area=roads.area[road_idx],
        lat=lat,
        lon=lon,
        gateway=np.full(n, None, dtype=object),
        install_day=_install_days(rng, n),
        attrs={
            "road": road_names[road_idx],
            "owner_unit": owners[rng.choice(len(owners), n, p=owner_p / owner_p.sum())],
            "well_depth_cm": depth,
            "overflow_level_cm": overflow,
        },
        group=road_idx,
        group_ids=list(roads.name),
    )


def _heating(spec: ScenarioSpec, areas: list[Area], seed: int) -> DeviceTable:
    rng = _rng(seed, Kind.HEATING)
    n = spec.heating
    n_comp = max(1, -(-n // spec.rooms_per_compound))
    comp_area = rng.choice(len(areas), size=n_comp, p=_area_weights(areas)).astype(np.int32)
    c_lat, c_lon = _points_in_area(rng, areas, comp_area, 0.7)
    compound = (np.arange(n) * n_comp // n).astype(np.int32)
    comp_names = [
        f"{areas[int(comp_area[c])].short_name}{('东', '西', '南', '北', '中')[c % 5]}里{c + 1}号院"
        for c in range(n_comp)
    ]
    comp_company = rng.integers(0, len(_HEAT_COMPANIES), n_comp)
    room_in_comp = np.arange(n) - np.searchsorted(compound, compound, side="left")
    building_no = room_in_comp // 8 + 1
    lat = c_lat[compound] + rng.normal(0, 60, n) / _M_PER_DEG_LAT
    lon = c_lon[compound] + rng.normal(0, 60, n) / (
        _M_PER_DEG_LAT * np.cos(np.radians(c_lat[compound]))
    )
    names = np.array(comp_names, dtype=object)
    companies = np.array(_HEAT_COMPANIES, dtype=object)
    return DeviceTable(
        kind=Kind.HEATING,
        device_id=_ids("ht", n, _width(n)),
        area=comp_area[compound],
        lat=lat,
        lon=lon,
        gateway=np.full(n, None, dtype=object),
        install_day=_install_days(rng, n),
        attrs={
            "heated_area_m2": np.round(rng.uniform(45, 140, n), 1),
            "building": np.array([f"{b}号楼" for b in building_no], dtype=object),
            "compound": names[compound],
            "heat_company": companies[comp_company][compound],
        },
        group=compound,
        group_ids=comp_names,
    )


def _chargers(spec: ScenarioSpec, areas: list[Area], seed: int) -> DeviceTable:
    rng = _rng(seed, Kind.CHARGER)
    n = spec.chargers
    n_sites = max(1, -(-n // spec.connectors_per_site))
    site_area = rng.choice(len(areas), size=n_sites, p=_area_weights(areas)).astype(np.int32)
    s_lat, s_lon = _points_in_area(rng, areas, site_area, 0.8)
    site = (np.arange(n) * n_sites // n).astype(np.int32)
    in_site = np.arange(n) - np.searchsorted(site, site, side="left")
    site_ids = [f"site-{i:0{_width(n_sites)}d}" for i in range(1, n_sites + 1)]
    site_power = rng.choice(np.array([7.0, 60.0, 120.0]), n_sites, p=[0.45, 0.35, 0.2])
    site_public = rng.random(n_sites) < 0.85
    lat = s_lat[site] + rng.normal(0, 8, n) / _M_PER_DEG_LAT
    lon = s_lon[site] + rng.normal(0, 8, n) / (_M_PER_DEG_LAT * np.cos(np.radians(s_lat[site])))
    return DeviceTable(
        kind=Kind.CHARGER,
        device_id=_ids("ch", n, _width(n)),
        area=site_area[site],
        lat=lat,
        lon=lon,
        gateway=np.full(n, None, dtype=object),
        install_day=_install_days(rng, n),
        attrs={
            "site_id": np.array(site_ids, dtype=object)[site],
            "power_kw": site_power[site],
            "public": site_public[site],
            "connector_no": (in_site % 2 + 1).astype(np.int64),
        },
        group=site,
        group_ids=site_ids,
    )


_BUILDERS = {
    Kind.STREETLIGHT: _streetlights,
    Kind.MANHOLE: _manholes,
    Kind.HEATING: _heating,
    Kind.CHARGER: _chargers,
}


def generate(spec: ScenarioSpec, seed: int, areas: list[Area] | None = None) -> Scenario:
    """Generate the scenario's layout and registry, deterministically from ``seed``."""
    areas = areas if areas is not None else reference_areas()
    tables = {
        kind: _BUILDERS[kind](spec, areas, seed) for kind in KIND_ORDER if spec.count(kind) > 0
    }
    return Scenario(spec=spec, seed=seed, areas=areas, tables=tables)


# --- registry output ---------------------------------------------------------------------------


def _format_column(name: str, values: npt.NDArray[Any]) -> list[str]:
    if values.dtype == np.float64:
        if name in ("lat", "lon"):
            return [f"{v:.6f}" for v in values.tolist()]
        return [f"{v:g}" for v in values.tolist()]
    if values.dtype == np.bool_:
        return ["true" if v else "false" for v in values.tolist()]
    return ["" if v is None else str(v) for v in values.tolist()]


def _dates(days: npt.NDArray[np.int32]) -> list[str]:
    return [str(d) for d in days.astype("datetime64[D]").tolist()]


def iter_rows(scenario: Scenario, chunk: int = 100_000) -> Iterator[list[tuple[str, ...]]]:
    """The registry as CSV rows (tuples of text cells in DEVICE_COLUMNS order), in chunks."""
    codes = np.array([a.code for a in scenario.areas], dtype=object)
    for kind in KIND_ORDER:
        table = scenario.tables.get(kind)
        if table is None:
            continue
        for lo in range(0, len(table), chunk):
            hi = min(len(table), lo + chunk)
            m = hi - lo
            cols: dict[str, list[str]] = {
                "device_id": [str(d) for d in table.device_id[lo:hi].tolist()],
                "kind": [kind.value] * m,
                "area_code": _format_column("area_code", codes[table.area[lo:hi]]),
                "lat": _format_column("lat", table.lat[lo:hi]),
                "lon": _format_column("lon", table.lon[lo:hi]),
                "gateway_id": _format_column("gateway_id", table.gateway[lo:hi]),
                "install_date": _dates(table.install_day[lo:hi]),
                "status": ["in_service"] * m,
            }
            empty = [""] * m
            row_cols = [
                cols.get(c)
                or (_format_column(c, table.attrs[c][lo:hi]) if c in table.attrs else empty)
                for c in DEVICE_COLUMNS
            ]
            yield list(zip(*row_cols, strict=True))


def write_csv(scenario: Scenario, out: IO[str]) -> int:
    """Write the registry as CSV for ``cityops devices import``; return the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DEVICE_COLUMNS)
    n = 0
    for rows in iter_rows(scenario):
        writer.writerows(rows)
        n += len(rows)
    return n


def write_csv_file(scenario: Scenario, path: Path) -> int:
    """Write the registry CSV to ``path``; return the number of rows."""
    with path.open("w", encoding="utf-8", newline="") as f:
        return write_csv(scenario, f)


def registry_records(scenario: Scenario) -> Iterator[registry.Record]:
    """The registry as import records (text cells, as read from the CSV)."""
    line = 1
    for rows in iter_rows(scenario):
        for row in rows:
            line += 1
            yield registry.Record(
                location=f"line {line}",
                values=dict(zip(DEVICE_COLUMNS, row, strict=True)),
                from_text=True,
            )


def registry_csv_text(scenario: Scenario) -> str:
    """The registry CSV as a string (small scenarios and tests)."""
    buf = io.StringIO()
    write_csv(scenario, buf)
    return buf.getvalue()
