"""deploy/Dockerfile (no Docker engine here): multi-stage, non-root, the `cityops` entrypoint,
every COPY source present and not ignored, and the numba warm-up it runs works."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.integration.deploy.conftest import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += (" " if current else "") + line.removesuffix("\\").strip()
        if line.endswith("\\"):
            continue
        word, _, args = current.partition(" ")
        out.append((word.upper(), args.strip()))
        current = ""
    return out


def test_multi_stage_non_root_cityops_entrypoint() -> None:
    steps = _instructions()
    stages = [args.split()[-1] for word, args in steps if word == "FROM"]
    assert stages == ["builder", "runtime"]
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][-1] :]
    users = [args for word, args in runtime if word == "USER"]
    assert users, "the runtime stage sets a user"
    assert users[-1] not in ("root", "0", "0:0")
    assert re.search(r"useradd .*--uid 10001", " ".join(a for _, a in runtime))
    (entry,) = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry == '["cityops"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert scripts["cityops"] == "cityops.cli:main"
    # the runtime installs wheels from the builder only: no compilers, no sources
    run_text = " ".join(a for w, a in runtime if w == "RUN")
    assert "from=builder" in run_text
    assert "--no-index" in run_text
    assert not any(w == "COPY" and a.split()[-1].startswith("./") for w, a in runtime)
    envs = " ".join(a for w, a in runtime if w == "ENV")
    assert "NUMBA_CACHE_DIR=" in envs
    # the warm-up runs after USER, as the user that later reads the cache
    order = [w for w, _ in runtime]
    warm = next(i for i, (w, a) in enumerate(runtime) if w == "RUN" and "warm_numba" in a)
    assert order.index("USER") < warm


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's ignore rules, enough for this file: later patterns win, ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.removesuffix("/**")):
            ignored = not negate
    return ignored


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    ignore = DEPLOY / "Dockerfile.dockerignore"
    patterns = [
        line.strip()
        for line in ignore.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [a for w, a in _instructions() if w == "COPY"]
    assert copies
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        for source in parts[:-1]:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: missing"
            assert not _ignored(source.rstrip("/"), patterns), f"COPY {source} is ignored"
    # every package setuptools builds is copied into the builder
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {a.split()[0] for a in copies}
    assert packages <= copied, packages - copied


@pytest.mark.slow
def test_numba_warm_up_fills_the_cache(tmp_path: Path) -> None:
    """The build step itself, run here: it compiles the kernels into NUMBA_CACHE_DIR."""
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "docker/warm_numba.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = {p.name for p in cache.rglob("*")}
    for kernel in ("accumulate", "anomaly_update", "nearest_site"):
        assert any(kernel in name and name.endswith(".nbi") for name in files), kernel
    assert "numba cache files" in done.stdout
    # without a cache folder the warm-up refuses instead of silently doing nothing
    env.pop("NUMBA_CACHE_DIR")
    refused = subprocess.run(
        [sys.executable, str(DEPLOY / "docker/warm_numba.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1
