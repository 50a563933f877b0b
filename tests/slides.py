"""Build small whole-slide images with planted identifiers, for the WSI cleaning tests.

Three layouts, each as OpenSlide expects it:

* ``build_svs``: Aperio SVS (tiled JPEG pyramid, stripped thumbnail, uncompressed label whose
  pixel bytes spell a barcode, JPEG macro; PHI in every ImageDescription and in TIFF tags).
* ``build_ndpi``: Hamamatsu NDPI (one JPEG strip per directory, 64-bit next-IFD pointers
  followed by the block of per-entry high offset bits that tifffile reads, private tags 65420.. with a slide label, serial number and barcode; macro with lens -1 whose
  JPEG carries the barcode in a comment segment).
* ``build_generic_tiff``: a tiled TIFF pyramid with DateTime/Artist/HostComputer/Software and a
  stripped label page.

Written with tifffile, except NDPI, whose directory layout tifffile cannot write.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

# Values planted in the slides (each builder lists its own); none may survive cleaning.
PATIENT = "DOE_JOHN"
BARCODE = "BARCODE-XYZ-987"
SCANNER_ID = "SS1234"
USER = "jsmithtech"
ARTIST = "Dr ARTIST_WHO"
HOST = "HOSTPC-PATHLAB7"
SLIDE_LABEL = "SLIDE-LABEL-ABC123"
SERIAL = "SERIAL-998877"
PLANTED = (PATIENT, BARCODE, SCANNER_ID, USER, ARTIST, HOST, SLIDE_LABEL, SERIAL)

APERIO_HEADER = "Aperio Image Library v12.0.5"


@dataclass(frozen=True)
class BuiltSlide:
    path: Path
    identifiers: tuple[str, ...]


def tissue(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth RGB pattern with some noise: compresses like tissue, decodes to known pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([
        128 + 100 * np.sin(xx / 37.0), 128 + 100 * np.cos(yy / 23.0), 128 + 60 * np.sin((xx + yy) / 51.0)
    ], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def text_pixels(text: str, height: int, width: int) -> np.ndarray:
    """RGB image whose raw bytes repeat ``text``: a label a byte scan can find."""
    raw = (text.encode() + b" ") * (height * width * 3 // (len(text) + 1) + 1)
    return np.frombuffer(raw[: height * width * 3], dtype=np.uint8).reshape(height, width, 3)


def aperio_description(line2: str, *, phi: bool = True) -> str:
    fields = ["AppMag = 20", "MPP = 0.499", "StripeWidth = 2040"]
    if phi:
        fields += [f"Filename = {PATIENT}", "Date = 03/14/21", "Time = 09:15:00",
                   f"User = {USER}", f"ScanScope ID = {SCANNER_ID}", f"Barcode = {BARCODE}"]
    return "|".join([f"{APERIO_HEADER}\r\n{line2}"] + fields)


def _phi_tags() -> list[tuple[int, str, int, str, bool]]:
    return [(315, "s", 0, ARTIST, True), (316, "s", 0, HOST, True)]


def build_svs(path: Path, width: int = 1024, height: int = 768, bigtiff: bool = False) -> BuiltSlide:
    image = tissue(height, width)
    common = {"photometric": "rgb", "metadata": None, "software": f"ScanScope {SCANNER_ID}"}
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
        tw.write(image, tile=(256, 256), compression="jpeg",
                 description=aperio_description(
                     f"{width}x{height} [0,0 {width}x{height}] (256x256) JPEG/RGB Q=30"),
                 datetime="2021:03:14 09:15:00", extratags=_phi_tags(), **common)
        thumb = image[::4, ::4]
        tw.write(thumb, rowsperstrip=thumb.shape[0], compression="jpeg",
                 description=aperio_description(f"{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} - "),
                 **common)
        half = image[::2, ::2]
        tw.write(half, tile=(256, 256), compression="jpeg", subfiletype=0,
                 description=aperio_description(
                     f"{width}x{height} [0,0 {width}x{height}] (256x256) -> {half.shape[1]}x{half.shape[0]} JPEG/RGB Q=30"),
                 **common)
        label = text_pixels(BARCODE, 64, 96)
        tw.write(label, rowsperstrip=64, compression=None, subfiletype=1,
                 description=f"{APERIO_HEADER}\r\nlabel 96x64", **common)
        macro = image[::8, ::8]
        tw.write(macro, rowsperstrip=macro.shape[0], compression="jpeg", subfiletype=9,
                 description=f"{APERIO_HEADER}\r\nmacro {macro.shape[1]}x{macro.shape[0]}", **common)
    return BuiltSlide(path, (PATIENT, BARCODE, SCANNER_ID, USER, ARTIST, HOST))


def build_generic_tiff(path: Path, width: int = 768, height: int = 512) -> BuiltSlide:
    image = tissue(height, width, seed=1)
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, tile=(128, 128), compression="zlib", photometric="rgb", metadata=None,
                 description=f"Case of {PATIENT}, scanned by {USER}", software=f"Scanner {SCANNER_ID}",
                 datetime="2021:03:14 09:15:00", extratags=_phi_tags())
        tw.write(image[::2, ::2], tile=(128, 128), compression="zlib", photometric="rgb",
                 subfiletype=1, metadata=None, software=f"Scanner {SCANNER_ID}")
        tw.write(text_pixels(BARCODE, 48, 80), rowsperstrip=48, photometric="rgb", metadata=None,
                 subfiletype=1, description=f"label {SLIDE_LABEL}")
    return BuiltSlide(path, (PATIENT, BARCODE, SCANNER_ID, USER, ARTIST, HOST, SLIDE_LABEL))


EXIF_OWNER = "EXIF-OWNER-PERSON"
EXIF_DATE = "2021:03:14 09:15:00"


def build_tiff_with_exif(path: Path) -> BuiltSlide:
    """A tiled TIFF whose first page points to an EXIF directory (owner name, capture date)."""
    image = tissue(256, 256, seed=3)
    with tifffile.TiffWriter(path) as tw:
        # tifffile will not write tag 34665 itself: write 34664 and renumber it below.
        tw.write(image, tile=(128, 128), photometric="rgb", metadata=None,
                 extratags=[(34664, "I", 1, 0, True)])
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags[34664]
        record_at, pointer_at = tag.offset, tag.valueoffset
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, record_at, 34665)
    data += b"\0" * (len(data) % 2)
    values = [(36867, EXIF_DATE.encode() + b"\0"), (42032, EXIF_OWNER.encode() + b"\0")]
    exif_at = len(data)
    value_at = exif_at + 2 + 12 * len(values) + 4
    table, blob = struct.pack("<H", len(values)), b""
    for tag, raw in values:
        table += struct.pack("<HHII", tag, 2, len(raw), value_at + len(blob))
        blob += raw
    data += table + struct.pack("<I", 0) + blob
    struct.pack_into("<I", data, pointer_at, exif_at)
    path.write_bytes(bytes(data))
    return BuiltSlide(path, (EXIF_OWNER, EXIF_DATE))


# --- NDPI: a classic little-endian TIFF with 8-byte next-directory pointers ------------------

_NDPI_TYPES = {"B": (1, 1), "s": (2, 1), "H": (3, 2), "I": (4, 4), "2I": (5, 8), "i": (9, 4), "f": (11, 4)}


def _jpeg_with_comment(image: np.ndarray, comment: str | None) -> bytes:
    data = bytes(imagecodecs.jpeg8_encode(image, level=90))
    if comment is None:
        return data
    body = comment.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + data[2:]


def _ndpi_entries(image: np.ndarray, lens: float, strip: tuple[int, int]) -> list[tuple[int, str, object]]:
    height, width = image.shape[:2]
    props = f"Created=2021/03/14\r\nBarcode={BARCODE}\r\nOperator={USER}\r\nObjective.Lens.Magnificant=20\r\n"
    return [
        (256, "I", width), (257, "I", height), (258, "H", (8, 8, 8)), (259, "H", 7), (262, "H", 6),
        (271, "s", "Hamamatsu"), (272, "s", "C13220"), (273, "I", strip[0]), (277, "H", 3),
        (278, "I", height), (279, "I", strip[1]), (282, "2I", (45000, 1)), (283, "2I", (45000, 1)),
        (296, "H", 3), (305, "s", "NDP.scan 3.2.15"), (306, "s", "2021:03:14 09:15:00"),
        (65420, "I", 1), (65421, "f", lens), (65422, "i", -1200), (65423, "i", 3400), (65424, "i", 0),
        (65427, "s", SLIDE_LABEL), (65442, "s", SERIAL), (65449, "s", props), (65468, "s", BARCODE),
    ]


def _pack_value(kind: str, value: object) -> tuple[int, int, bytes]:
    code, size = _NDPI_TYPES[kind]
    if kind == "s":
        raw = str(value).encode() + b"\0"
        return code, len(raw), raw
    if kind == "B":
        raw = bytes(value)  # type: ignore[arg-type]
        return code, len(raw), raw
    values = value if isinstance(value, tuple) else (value,)
    fmt = {"H": "H", "I": "I", "2I": "I", "i": "i", "f": "f"}[kind]
    raw = struct.pack(f"<{len(values)}{fmt}", *values)
    return code, len(raw) // size, raw


def build_ndpi(path: Path, width: int = 1024, height: int = 768) -> BuiltSlide:
    """Levels (lens 20, 10, 5) and a macro (lens -1), laid out the way NDP.scan writes them."""
    image = tissue(height, width, seed=2)
    images = [(image, 20.0, None), (image[::2, ::2], 10.0, None), (image[::4, ::4], 5.0, None),
              (image[::8, ::8], -1.0, f"macro {BARCODE} {PATIENT}")]
    out = bytearray(b"II" + struct.pack("<H", 42) + b"\0" * 8)
    next_pointer_at = 4
    for pixels, lens, comment in images:
        jpeg = _jpeg_with_comment(np.ascontiguousarray(pixels), comment)
        strip = (len(out), len(jpeg))
        out += jpeg
        entries = sorted(_ndpi_entries(pixels, lens, strip), key=lambda e: e[0])
        packed = [(tag, *_pack_value(kind, value)) for tag, kind, value in entries]
        value_at: dict[int, int] = {}
        for tag, _, _, raw in packed:
            if len(raw) > 4:
                value_at[tag] = len(out)
                out += raw + (b"\0" if len(raw) % 2 else b"")
        ifd_at = len(out)
        struct.pack_into("<Q", out, next_pointer_at, ifd_at)
        out += struct.pack("<H", len(packed))
        for tag, code, count, raw in packed:
            field = struct.pack("<I", value_at[tag]) if tag in value_at else raw.ljust(4, b"\0")
            out += struct.pack("<HHI", tag, code, count) + field
        next_pointer_at = len(out)
        out += b"\0" * 8 + b"\0" * 4 * len(packed)  # next pointer, high bits of each entry
    path.write_bytes(bytes(out))
    return BuiltSlide(path, (PATIENT, BARCODE, USER, SLIDE_LABEL, SERIAL))


# --- Large slide for the benchmark: streamed, tiles repeat a few pre-encoded blocks ---------

def _repeating_tiles(blocks: list[bytes], count: int) -> Iterator[bytes]:
    for index in range(count):
        yield blocks[(index * 7 + index // 5) % len(blocks)]


def build_large_svs(path: Path, target_bytes: int, tile: int = 256) -> BuiltSlide:
    """BigTIFF Aperio slide of about ``target_bytes``, written tile by tile (little memory)."""
    blocks = [bytes(imagecodecs.jpeg8_encode(tissue(tile, tile, seed=s), level=95)) for s in range(8)]
    per_tile = sum(map(len, blocks)) / len(blocks)
    side_tiles = max(2, int((target_bytes / per_tile) ** 0.5))
    side = side_tiles * tile
    common = {"photometric": "ycbcr", "subsampling": (2, 2), "metadata": None,
              "compression": "jpeg", "dtype": np.uint8}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(_repeating_tiles(blocks, side_tiles**2), shape=(side, side, 3), tile=(tile, tile),
                 description=aperio_description(f"{side}x{side} [0,0 {side}x{side}] ({tile}x{tile}) JPEG/RGB Q=95"),
                 extratags=_phi_tags(), **common)
        thumb = tissue(256, 256)
        tw.write(thumb, rowsperstrip=256, compression="jpeg", photometric="rgb", metadata=None,
                 description=aperio_description(f"{side}x{side} -> 256x256 - "))
        small_tiles = max(1, side_tiles // 4)
        tw.write(_repeating_tiles(blocks, small_tiles**2), shape=(small_tiles * tile, small_tiles * tile, 3),
                 tile=(tile, tile), description=aperio_description(f"{side}x{side} -> {small_tiles * tile}"),
                 **common)
        tw.write(text_pixels(BARCODE, 64, 96), rowsperstrip=64, photometric="rgb", metadata=None,
                 subfiletype=1, description=f"{APERIO_HEADER}\r\nlabel 96x64")
        tw.write(tissue(96, 128), rowsperstrip=96, compression="jpeg", photometric="rgb", metadata=None,
                 subfiletype=9, description=f"{APERIO_HEADER}\r\nmacro 128x96")
    return BuiltSlide(path, (PATIENT, BARCODE, SCANNER_ID, USER, ARTIST, HOST))
