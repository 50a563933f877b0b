"""Decode a DICOM's frames and write redacted frames back without losing any other pixel.

- Native (uncompressed, also deflated) data: decoded and written back as is, in Explicit VR
  Little Endian when it was big endian, interleaved (PlanarConfiguration 0).
- Lossless compressed data: re-encoded in the same transfer syntax where an encoder is at hand
  (RLE by pydicom; JPEG-LS and JPEG 2000 lossless by imagecodecs), otherwise in RLE Lossless.
  Every encoding is decoded again and compared with the intended pixels before it is kept.
- Lossy compressed data: never re-encoded (that would degrade every pixel). Unchanged frames
  are left byte for byte. Baseline JPEG is edited in the DCT domain (with jpeglib): the 8 x 8
  blocks under a box are made flat and every other block keeps its coefficients. Other lossy
  syntaxes raise ``PixelError`` naming the syntax.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from .detect import Box

NATIVE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                    DeflatedExplicitVRLittleEndian})
LOSSLESS = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLossless,
                      JPEGLosslessSV1, HTJ2KLossless, HTJ2KLosslessRPCL})


class PixelError(Exception):
    """Pixel data that cannot be redacted as required; the series must not be passed on."""


def first_line(error: BaseException) -> str:
    """An underlying error as one line, for one-line reports."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@dataclass(frozen=True)
class PixelFrames:
    """Stored pixel values of every frame, (frames, rows, cols) or (frames, rows, cols, samples)."""

    array: np.ndarray
    photometric: str
    transfer_syntax: UID

    @property
    def lossy(self) -> bool:
        return self.transfer_syntax not in NATIVE | LOSSLESS


def read_frames(ds: Dataset, name: str) -> PixelFrames:
    """Decode all frames as stored: no rescale, no colour conversion that could not be undone."""
    if "PixelData" not in ds:
        raise PixelError(f"{name}: no pixel data")
    if int(ds.get("BitsAllocated", 0)) not in (8, 16, 32):
        raise PixelError(f"{name}: BitsAllocated {ds.get('BitsAllocated')} is not supported")
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    lossy = syntax not in NATIVE | LOSSLESS
    try:
        # Lossy JPEG decoders return RGB for YBR; that copy only feeds the detector.
        ds.pixel_array_options(raw=not lossy)
        array = ds.pixel_array
    except Exception as error:  # decoders raise many types; all mean the same here
        raise PixelError(f"{name}: pixel data cannot be decoded ({first_line(error)})") from error
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shape = (frames, int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    array = array.reshape(shape)
    return PixelFrames(array, str(ds.get("PhotometricInterpretation", "")), syntax)


def _rle(ds: Dataset, array: np.ndarray) -> None:
    single = array[0] if array.shape[0] == 1 else array  # pydicom wants no frame axis then
    ds.compress(RLELossless, single, encoding_plugin="pydicom", generate_instance_uid=False)


def _imagecodecs(ds: Dataset, array: np.ndarray, syntax: UID) -> None:
    import imagecodecs

    frames = []
    for frame in array:
        if syntax == JPEGLSLossless:
            frames.append(imagecodecs.jpegls_encode(frame, level=0))
        else:
            frames.append(imagecodecs.jpeg2k_encode(frame, level=0, codecformat="J2K",
                                                    reversible=True, mct=False))
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax


def _native(ds: Dataset, array: np.ndarray) -> None:
    stored = array.astype(array.dtype.newbyteorder("<"), copy=False)
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW" if stored.dtype.itemsize > 1 else "OB"
    if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _same_pixels(ds: Dataset, expected: np.ndarray) -> bool:
    ds.pixel_array_options(raw=True)
    try:
        decoded = ds.pixel_array
    except Exception:  # noqa: BLE001 - an encoding its decoder rejects is simply not kept
        return False
    return decoded.size == expected.size and np.array_equal(decoded.reshape(expected.shape),
                                                            expected)


def write_frames(ds: Dataset, frames: PixelFrames, array: np.ndarray, name: str) -> None:
    """Store ``array`` (same shape as ``frames.array``) as the dataset's pixel data, losslessly."""
    if frames.lossy:
        raise PixelError(
            f"{name}: lossy {frames.transfer_syntax.name} pixel data cannot be redacted "
            "without recompression")
    if frames.photometric == "YBR_FULL_422":
        # Decoded full resolution; stored so, which is the same pixels without subsampling.
        ds.PhotometricInterpretation = "YBR_FULL"
    elif frames.photometric in ("YBR_RCT", "YBR_ICT"):
        # JPEG 2000 decoders undo the component transform: the decoded values are RGB.
        ds.PhotometricInterpretation = "RGB"
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0
    syntax = frames.transfer_syntax
    if syntax in NATIVE:
        _native(ds, array)
    elif syntax in (JPEGLSLossless, JPEG2000Lossless):
        _imagecodecs(ds, array, syntax)
    else:
        _rle(ds, array)
    if not _same_pixels(ds, array) and syntax not in NATIVE | {RLELossless}:
        _rle(ds, array)
    if not _same_pixels(ds, array):
        raise PixelError(f"{name}: redacted pixels did not survive lossless re-encoding")


def _ycbcr(rgb: np.ndarray) -> np.ndarray:
    """JPEG's full-range YCbCr of one RGB colour (ITU-T T.871)."""
    r, g, b = (float(v) for v in rgb)
    return np.array([0.299 * r + 0.587 * g + 0.114 * b,
                     128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                     128 + 0.5 * r - 0.418688 * g - 0.081312 * b])


def _flatten_blocks(jpeg, fills: list[tuple[Box, np.ndarray]]) -> None:
    """Make every DCT block under a box flat at the box's fill colour; other blocks untouched."""
    space = str(jpeg.jpeg_color_space)
    components = [jpeg.Y] + ([jpeg.Cb, jpeg.Cr] if jpeg.has_chrominance else [])
    factors = np.asarray(jpeg.samp_factor)  # (components, 2): vertical, horizontal
    v_max, h_max = factors[:, 0].max(), factors[:, 1].max()
    for index, coefficients in enumerate(components):
        quant = jpeg.qt[jpeg.quant_tbl_no[index]]
        rows = 8 * v_max // factors[index, 0]  # pixels per block of this component
        cols = 8 * h_max // factors[index, 1]
        for box, colour in fills:
            if len(components) == 1:
                level = float(np.mean(colour))
            elif space.endswith("YCbCr"):
                level = _ycbcr(colour)[index]
            else:
                level = float(colour[index])
            ys = slice(box.y0 // rows, -(-box.y1 // rows))
            xs = slice(box.x0 // cols, -(-box.x1 // cols))
            coefficients[ys, xs] = 0
            # DC of a flat 8 x 8 block: 8 x (level - 128), quantised.
            coefficients[ys, xs, 0, 0] = round((level - 128) * 8 / float(quant[0, 0]))


def redact_jpeg_blocks(ds: Dataset, fills: list[list[tuple[Box, np.ndarray]]], name: str) -> None:
    """Baseline JPEG without recompression: in each frame, the DCT blocks under the boxes are made
    flat (DC only) at the fill colour; every other block keeps its coefficients exactly."""
    if ds.file_meta.TransferSyntaxUID != JPEGBaseline8Bit:
        raise PixelError(f"{name}: lossy {UID(ds.file_meta.TransferSyntaxUID).name} pixel data "
                         "cannot be redacted without recompression")
    try:
        import jpeglib
    except ImportError as error:
        raise PixelError(f"{name}: lossy JPEG pixel data can only be redacted block-wise, which "
                         "needs the jpeglib package") from error
    count = int(ds.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    written = []
    with tempfile.TemporaryDirectory(prefix="bidsdeid-jpeg-") as tmp:
        for index, (data, frame_fills) in enumerate(zip(frames, fills)):
            if not frame_fills:
                written.append(data)
                continue
            src, dst = Path(tmp) / f"{index}.jpg", Path(tmp) / f"{index}_out.jpg"
            src.write_bytes(data)
            try:
                jpeg = jpeglib.read_dct(str(src))
                if jpeg.progressive_mode:
                    raise PixelError(f"{name}: progressive JPEG is not a baseline frame")
                _flatten_blocks(jpeg, frame_fills)
                jpeg.write_dct(str(dst))
            except PixelError:
                raise
            except Exception as error:  # libjpeg reports through many exception types
                raise PixelError(f"{name}: JPEG frame {index} cannot be edited ({first_line(error)})") \
                    from error
            written.append(dst.read_bytes())
    ds.PixelData = encapsulate(written)
    ds["PixelData"].VR = "OB"
