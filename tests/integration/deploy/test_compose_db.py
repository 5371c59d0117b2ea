"""The compose stack's database: a TimescaleDB without the compressed-chunk ON CONFLICT bug, its
data on the volume the image really uses, and the image's own init scripts left in place."""

from __future__ import annotations

from typing import Any

from cityops.db.storage import MIN_TIMESCALEDB, parse_version
from tests.integration.deploy.conftest import DEPLOY

INITDB = "/docker-entrypoint-initdb.d"


def _image(compose: dict[str, Any]) -> tuple[tuple[int, int, int], int]:
    tag = compose["services"]["db"]["image"].split(":", 1)[1]
    version, pg = tag.rsplit("-pg", 1)
    return parse_version(version), int(pg)


def test_timescaledb_is_fixed_and_on_a_current_postgres(compose: dict[str, Any]) -> None:
    version, pg = _image(compose)
    assert version >= MIN_TIMESCALEDB
    assert pg >= 17


def test_data_volume_is_where_the_image_keeps_its_data(compose: dict[str, Any]) -> None:
    _, pg = _image(compose)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["db"]["volumes"]}
    # PostgreSQL 18 images keep PGDATA in /var/lib/postgresql/18/docker (VOLUME /var/lib/postgresql)
    expected = "/var/lib/postgresql" if pg >= 18 else "/var/lib/postgresql/data"
    assert mounts[expected] == "db-data"


def test_only_our_init_scripts_are_mounted_beside_the_images_own(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["db"]["volumes"]
    targets = [v.split(":")[1] for v in volumes]
    assert INITDB not in targets, "mounting the folder hides the image's install and tune scripts"
    ours = [v for v in volumes if v.split(":")[1].startswith(INITDB + "/")]
    assert ours
    for v in ours:
        source, target = v.split(":")[:2]
        assert (DEPLOY / source).is_file()
        name = target.rsplit("/", 1)[1]
        # after the image's 000_install_timescaledb.sh and 001_timescaledb_tune.sh
        assert name > "001_timescaledb_tune.sh"
    assert compose["services"]["db"]["environment"]["TS_TUNE_MEMORY"]
