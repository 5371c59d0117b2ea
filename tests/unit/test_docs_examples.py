"""The docs' examples name devices of the demo's registry and fields of the catalog (issue 19):
`cityops catalog docs --check` (run by CI) checks README.md and docs/*.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cityops.catalog_docs import check_examples
from simulators import scenario

ROOT = Path(__file__).resolve().parents[2]


def _demo_ids() -> set[str]:
    demo = scenario.generate(scenario.scenario_spec("pilot", None), seed=7)
    return {str(d) for t in demo.tables.values() for d in t.device_id.tolist()}


def test_the_shipped_docs_examples_are_valid() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    texts = {f.name: f.read_text(encoding="utf-8") for f in files}
    assert check_examples(texts, _demo_ids()) == []


def test_ids_fields_and_kinds_that_do_not_exist_are_named_with_their_line() -> None:
    text = (
        "Intro with `GET /devices/SL-1/latest` inline.\n"
        "\n"
        "```bash\n"
        'curl "$API/readings/buckets?device_id=HT-1&fields=temperature_c,lamp_on"\n'
        "mosquitto_pub -t cityops/v1/streetlight/sl-00001/telemetry "
        '-m \'{"values": {"lamp_on": true}}\'\n'
        'curl "$API/devices?kind=lamp"\n'
        "```\n"
    )
    problems = check_examples({"x.md": text}, _demo_ids())
    assert problems == [
        "x.md:4: device id 'HT-1' is not a device of the demo's registry (e.g. ch-00001)",
        "x.md:4: 'lamp_on' is no reading field of the catalog",
        "x.md:5: 'lamp_on' is no reading field of the catalog",
        "x.md:6: 'lamp' is no device kind",
        "x.md:1: device id 'SL-1' is not a device of the demo's registry (e.g. ch-00001)",
    ]


def test_placeholders_and_real_examples_pass() -> None:
    text = (
        "`/devices/{device_id}/latest`, `/devices/import`, `--kind streetlight`\n"
        '```\ncurl "$API/devices/sl-00042/latest?x=1"\n'
        '{"device_id": "ht-00017", "values": {"temperature_c": 19.5}}\n'
        "  - field: tilt_deg\n```\n"
    )
    assert check_examples({"ok.md": text}, _demo_ids()) == []


def test_the_docs_check_fails_on_a_bad_example(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    run = [sys.executable, "-m", "cityops", "catalog", "docs", "--path", str(docs / "catalog.md")]
    subprocess.run(run, check=True, capture_output=True, cwd=tmp_path)
    (tmp_path / "README.md").write_text("Try `curl $API/devices/SL-1/latest`.\n")
    result = subprocess.run(
        [*run, "--check"], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 1
    assert "README.md:1: device id 'SL-1'" in result.stderr
    (tmp_path / "README.md").write_text("Try `curl $API/devices/sl-00001/latest`.\n")
    result = subprocess.run(
        [*run, "--check"], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
