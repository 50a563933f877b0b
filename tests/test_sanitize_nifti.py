"""sanitize_nifti(): free-text header fields and extensions go, every other byte stays."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bidsdeid.sanitize import NEUTRAL_DESCRIP, SanitizeError, sanitize_nifti

SECRET = b"Borrowdale"
# Byte ranges sanitize_nifti may change, per format: the text fields, vox_offset, extender.
NIFTI1_CHANGED = [(4, 14), (14, 32), (108, 112), (148, 228), (228, 252), (328, 344)]
NIFTI2_CHANGED = [(168, 176), (240, 320), (320, 344), (508, 524), (525, 540)]


def make_nifti(path: Path, shape=(6, 5, 4), image_class=nib.Nifti1Image, big_endian=False,
               with_extension=True) -> Path:
    """A nibabel-written file with identifiers in every free-text place and an extension."""
    rng = np.random.default_rng(3)
    data = rng.integers(-300, 3000, shape).astype(">i2" if big_endian else "<i2")
    affine = np.array([[-1.5, 0.1, 0, 40], [0.1, 1.25, 0, -30], [0, 0, 4, 12], [0, 0, 0, 1]])
    header_class = nib.Nifti1Header if image_class is nib.Nifti1Image else nib.Nifti2Header
    image = image_class(data, affine, header_class(endianness=">" if big_endian else "<"))
    header = image.header
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=2)
    header.set_slope_inter(0.5, 10.0)
    header["descrip"] = b"TE=5;Time=101500.000;Borrowdale"
    header["aux_file"] = b"Borrowdale comment"
    header["intent_name"] = b"Borrowdale"
    if image_class is nib.Nifti1Image:
        header["db_name"] = b"Borrowdale"
    if with_extension:
        header.extensions.append(nib.nifti1.Nifti1Extension(6, b"Borrowdale was here" + bytes(5)))
    nib.save(image, path)
    return path


def raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def without(data: bytes, ranges) -> bytes:
    """``data`` with the given byte ranges blanked, to compare what must not change."""
    blanked = bytearray(data)
    for start, stop in ranges:
        blanked[start:stop] = bytes(stop - start)
    return bytes(blanked)


def header_on_disk(path: Path) -> nib.Nifti1Header:
    """The header as stored (nibabel's loaded image resets vox_offset)."""
    header_class = type(nib.load(path).header)
    return header_class.from_fileobj(io.BytesIO(raw_bytes(path)))


def voxel_bytes(path: Path) -> bytes:
    return raw_bytes(path)[int(header_on_disk(path).get_data_offset()):]


@pytest.mark.parametrize("name", ["img.nii", "img.nii.gz"])
@pytest.mark.parametrize("shape", [(6, 5, 4), (6, 5, 4, 3)], ids=["3d", "4d"])
def test_header_and_voxel_bytes_unchanged_except_text_fields(tmp_path, name, shape):
    path = make_nifti(tmp_path / name, shape)
    before, voxels = raw_bytes(path), voxel_bytes(path)
    sanitize_nifti(path)
    after = raw_bytes(path)
    assert without(after[:348], NIFTI1_CHANGED) == without(before[:348], NIFTI1_CHANGED), \
        "dims, datatype, scaling, qform/sform must be byte-identical"
    assert after[352:] == voxels, "voxel bytes must be byte-identical"


@pytest.mark.parametrize("name", ["img.nii", "img.nii.gz"])
def test_free_text_fields_cleared_and_descrip_neutral(tmp_path, name):
    path = make_nifti(tmp_path / name)
    sanitize_nifti(path)
    header = nib.load(path).header
    assert header["descrip"].item() == NEUTRAL_DESCRIP
    for field in ("aux_file", "intent_name", "db_name", "data_type"):
        assert header[field].item() == b"", f"{field} not cleared"
    assert SECRET not in raw_bytes(path)


@pytest.mark.parametrize("name", ["img.nii", "img.nii.gz"])
def test_extensions_removed_and_voxels_follow_the_header(tmp_path, name):
    path = make_nifti(tmp_path / name)
    assert len(nib.load(path).header.extensions) == 1, "fixture check: extension written"
    sanitize_nifti(path)
    data = raw_bytes(path)
    assert data[348:352] == bytes(4), "extender must say: no extensions"
    assert header_on_disk(path).get_data_offset() == 352
    assert len(nib.load(path).header.extensions) == 0


def test_image_and_affine_read_back_identical(tmp_path):
    path = make_nifti(tmp_path / "img.nii.gz", (6, 5, 4, 2))
    before = nib.load(path)
    voxels, affine = before.get_fdata().copy(), before.affine.copy()
    sanitize_nifti(path)
    after = nib.load(path)
    assert np.array_equal(after.get_fdata(), voxels)
    assert np.array_equal(after.affine, affine)
    assert after.header.get_sform(coded=True)[1] == 2 and after.header.get_qform(coded=True)[1] == 1


def test_big_endian_file_keeps_its_byte_order(tmp_path):
    path = make_nifti(tmp_path / "img.nii", big_endian=True)
    assert header_on_disk(path).endianness == ">", "fixture check: big-endian file"
    voxels = voxel_bytes(path)
    sanitize_nifti(path)
    assert header_on_disk(path).endianness == ">"
    assert nib.load(path).header["descrip"].item() == NEUTRAL_DESCRIP
    assert raw_bytes(path)[352:] == voxels


def test_nifti2_file_is_sanitized(tmp_path):
    path = make_nifti(tmp_path / "img.nii.gz", image_class=nib.Nifti2Image)
    before, voxels = raw_bytes(path), voxel_bytes(path)
    sanitize_nifti(path)
    after = raw_bytes(path)
    assert SECRET not in after
    assert without(after[:540], NIFTI2_CHANGED) == without(before[:540], NIFTI2_CHANGED)
    assert after[544:] == voxels
    assert nib.load(path).header["descrip"].item() == NEUTRAL_DESCRIP


def test_gzip_header_carries_no_file_name_or_time(tmp_path):
    path = make_nifti(tmp_path / "sub-Borrowdale.nii.gz")
    sanitize_nifti(path)
    head = path.read_bytes()[:10]
    flags, mtime = head[3], int.from_bytes(head[4:8], "little")
    assert flags & 0x08 == 0, "gzip FNAME must not be written (it would name the temp file)"
    assert mtime == 0


def test_no_temp_file_left_beside_the_output(tmp_path):
    path = make_nifti(tmp_path / "img.nii.gz")
    sanitize_nifti(path)
    assert sorted(tmp_path.iterdir()) == [path]


def test_file_without_extension_is_sanitized_too(tmp_path):
    path = make_nifti(tmp_path / "img.nii", with_extension=False)
    voxels = voxel_bytes(path)
    sanitize_nifti(path)
    assert raw_bytes(path)[352:] == voxels


@pytest.mark.parametrize("name, content", [
    ("img.nii", b"not a nifti file at all" * 20),
    ("img.nii.gz", b"not gzip"),
    ("img.nii", b"\x5c\x01\x00\x00" + bytes(100)),  # sizeof_hdr 348 but truncated
    ("img.mgz", b"anything"),
])
def test_unreadable_input_raises_error_naming_the_file_and_is_left_alone(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SanitizeError, match=name.replace(".", r"\.")):
        sanitize_nifti(path)
    assert path.read_bytes() == content
    assert sorted(tmp_path.iterdir()) == [path], "no temp file left behind"
