"""The CJK font the report is rendered with: found on the machine, embedded in the HTML.

Street/township names are Chinese. A machine without a CJK font draws them as empty boxes, in
the HTML and in the PDF alike. The report therefore uses one font file for everything: the
charts are measured with it (matplotlib) and the HTML carries a subset of it (only the
characters the report uses, a few hundred kB) as an ``@font-face``, so the page and the PDF
printed from it show the same glyphs whatever fonts the viewer or the printing machine has.

Where the font comes from, in order: ``CITYOPS_CJK_FONT`` (a .ttf/.otf/.ttc file, optionally
``path#index`` for a face in a collection), the files of Debian's ``fonts-noto-cjk`` and a few
other well-known places, then fontconfig (``fc-list :lang=zh``). .ci/run and the container image
install ``fonts-noto-cjk``.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# The CSS family name of the embedded subset; the stylesheet lists it first.
EMBEDDED_FAMILY = "CityopsReportCJK"
FONT_ENV = "CITYOPS_CJK_FONT"
INSTALL_HINT = "apt-get install fonts-noto-cjk, or set CITYOPS_CJK_FONT to a CJK .ttf/.otf/.ttc"

# Simplified-Chinese faces first (the area names are simplified Chinese).
KNOWN_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian/Ubuntu fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch, Alpine
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian fonts-wqy-microhei
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",  # macOS
    "C:/Windows/Fonts/msyh.ttc",  # Windows: Microsoft YaHei
)
PROBE = "街道乡"  # a font that has these draws the area names


@dataclass(frozen=True, slots=True)
class CjkFont:
    """A font face that has the Chinese glyphs the report needs."""

    path: Path
    index: int  # the face inside a .ttc collection (0 for a single font)
    family: str  # its family name as fontconfig and matplotlib know it


def _faces(path: Path) -> list[tuple[int, str, bool]]:
    """(index, family, has the probe glyphs) of every face in a font file."""
    from fontTools.ttLib import TTCollection, TTFont

    try:
        with path.open("rb") as fh:
            is_collection = fh.read(4) == b"ttcf"
        holder = (
            TTCollection(str(path), lazy=True) if is_collection else TTFont(str(path), lazy=True)
        )
    except Exception as err:  # any unreadable file is simply not a candidate
        log.warning("report_font_unreadable", path=str(path), error=str(err))
        return []
    try:
        fonts = list(holder.fonts) if is_collection else [holder]
        out = []
        for i, font in enumerate(fonts):
            family = str(font["name"].getDebugName(1) or "")
            cmap = font.getBestCmap() or {}
            out.append((i, family, all(ord(c) in cmap for c in PROBE)))
        return out
    except Exception as err:  # a damaged table: not a candidate either
        log.warning("report_font_unreadable", path=str(path), error=str(err))
        return []
    finally:
        holder.close()


def _pick(path: Path, index: int | None = None) -> CjkFont | None:
    faces = [f for f in _faces(path) if f[2]]
    if index is not None:
        faces = [f for f in faces if f[0] == index]
    if not faces:
        return None

    def score(face: tuple[int, str, bool]) -> tuple[int, int, int]:
        name = face[1]
        return ("SC" not in name.split(), "Mono" in name, face[0])

    i, family, _ = min(faces, key=score)
    return CjkFont(path=path, index=i, family=family)


def _fontconfig_files() -> list[Path]:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return []
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments
            [fc_list, ":lang=zh", "file"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    files = sorted({line.strip().rstrip(":") for line in done.stdout.splitlines() if line.strip()})
    # Sans before serif, regular before bold.
    return [Path(f) for f in sorted(files, key=lambda f: ("Serif" in f, "Bold" in f, f))]


@functools.cache
def _find(given: str | None) -> CjkFont | None:
    if given:
        text, _, idx = given.partition("#")
        path = Path(text)
        font = _pick(path, int(idx) if idx.isdigit() else None) if path.is_file() else None
        if font is None:
            log.warning("report_font_unusable", setting=FONT_ENV, value=given, probe=PROBE)
        return font
    for candidate in [*map(Path, KNOWN_FILES), *_fontconfig_files()]:
        if candidate.is_file():
            font = _pick(candidate)
            if font is not None:
                return font
    return None


def find_cjk_font() -> CjkFont | None:
    """The font the report uses for Chinese text, or None when the machine has none."""
    return _find(os.environ.get(FONT_ENV) or None)


@functools.lru_cache(maxsize=8)
def _subset_b64(path: Path, index: int, text: str) -> str:
    from fontTools import subset

    options = subset.Options()
    options.font_number = index
    options.name_IDs = ["*"]
    options.notdef_outline = True
    options.layout_features = ["*"]
    font = subset.load_font(str(path), options)
    try:
        font.recalcTimestamp = False  # same text, same bytes
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=text)
        subsetter.subset(font)
        buf = io.BytesIO()
        font.save(buf)
    finally:
        font.close()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def font_face_css(font: CjkFont, text: str) -> str:
    """An ``@font-face`` rule carrying the glyphs of ``text`` from ``font`` (a subset)."""
    chars = "".join(sorted({c for c in text if c.isprintable()} | set(" 0123456789%.,-")))
    data = _subset_b64(font.path, font.index, chars)
    return (
        f'@font-face {{ font-family: "{EMBEDDED_FAMILY}"; font-style: normal; '
        f'src: url(data:font/otf;base64,{data}) format("opentype"); }}'
    )
