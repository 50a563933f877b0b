"""Discovery: DICOM recognised by content, grouped by patient/study/series, bad files named."""

from __future__ import annotations

import os

import pytest
from dicomfactory import mr_slice, write
from pydicom.uid import generate_uid

from bidsdeid.discover import discover, sniff_dicom


def series_files(root, n=3, patient="MRN0001", **kw):
    study, series = generate_uid(), generate_uid()
    return [write(mr_slice(patient, study, series, instance=i + 1, **kw), root / f"f{i}_{series[-6:]}")
            for i in range(n)]


def test_dicom_recognised_by_content_not_extension(tmp_path):
    write(mr_slice(), tmp_path / "no_extension")
    write(mr_slice(), tmp_path / "odd.name.img")
    found = discover(tmp_path)
    assert sum(len(s.files) for s in found.series) == 2


def test_dicom_without_preamble_is_found(tmp_path):
    path = write(mr_slice(), tmp_path / "bare", preamble=False)
    assert sniff_dicom(path.read_bytes()[:256])
    assert discover(tmp_path).series[0].files == [path]


def test_series_grouped_by_uid_not_by_folder(tmp_path):
    study, series = generate_uid(), generate_uid()
    for i, folder in enumerate(["a", "b/c", "d"]):
        write(mr_slice("MRN0001", study, series, instance=i + 1), tmp_path / folder / f"x{i}")
    found = discover(tmp_path)
    assert len(found.series) == 1 and len(found.series[0].files) == 3


def test_files_of_a_series_are_ordered_by_instance_number(tmp_path):
    study, series = generate_uid(), generate_uid()
    for i, name in zip([3, 1, 2], ["a", "b", "c"]):
        write(mr_slice("MRN0001", study, series, instance=i), tmp_path / name)
    assert [p.name for p in discover(tmp_path).series[0].files] == ["b", "c", "a"]


def test_patients_and_studies_are_kept_apart(tmp_path):
    series_files(tmp_path, patient="MRN0001")
    series_files(tmp_path, patient="MRN0002")
    keys = {s.patient_key for s in discover(tmp_path).series}
    assert keys == {"id:MRN0001", "id:MRN0002"}


def test_header_summary_holds_heuristic_fields_but_no_pixels(tmp_path):
    series_files(tmp_path, n=2, description="t2_tse_tra")
    header = discover(tmp_path).series[0].header
    assert header["SeriesDescription"] == "t2_tse_tra"
    assert header["NumberOfFiles"] == 2
    assert "PixelData" not in header


def test_non_dicom_and_dicomdir_are_skipped_with_a_note(tmp_path):
    (tmp_path / "notes.txt").write_text("scan notes")
    dicomdir = mr_slice()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.SOPClassUID = "1.2.840.10008.1.3.10"
    write(dicomdir, tmp_path / "DICOMDIR")
    reasons = {s.path.name: s.reason for s in discover(tmp_path).skipped}
    assert reasons == {"notes.txt": "not DICOM, twix or a slide", "DICOMDIR": "DICOMDIR index"}


def test_bad_dicom_files_are_failures_with_reasons(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    good = write(mr_slice(), tmp_path / "good.dcm")
    (tmp_path / "truncated.dcm").write_bytes(good.read_bytes()[:300])
    (tmp_path / "text.dcm").write_text("this is not a DICOM file\n")
    found = discover(tmp_path)
    reasons = {f.path.name: f.reason for f in found.failures}
    assert reasons == {"empty.dcm": "empty file", "truncated.dcm": "truncated DICOM file",
                       "text.dcm": "named .dcm but not DICOM"}
    assert [p.name for s in found.series for p in s.files] == ["good.dcm"]


def test_symlinks_are_not_followed_by_default(tmp_path):
    outside = tmp_path / "outside"
    write(mr_slice(), outside / "secret.dcm")
    inside = tmp_path / "in"
    inside.mkdir()
    os.symlink(outside, inside / "link")
    found = discover(inside)
    assert not found.series
    assert [s.reason for s in found.skipped] == ["symbolic link not followed"]
    assert len(discover(inside, follow_symlinks=True).series) == 1


@pytest.mark.parametrize("layout", ["VB", "VD"])
def test_twix_files_are_recognised_by_content(tmp_path, layout):
    from twixfiles import MeasSpec, build_twix

    build_twix(tmp_path / "meas_MID00042.dat", layout, [MeasSpec()])
    (tmp_path / "random.dat").write_bytes(os.urandom(20000))
    found = discover(tmp_path)
    assert [p.name for p in found.twix] == ["meas_MID00042.dat"]
    assert [s.path.name for s in found.skipped] == ["random.dat"]


def test_index_gives_the_same_discovery_without_reading_files_again(tmp_path, monkeypatch):
    import bidsdeid.discover as discover_module
    from bidsdeid.discover import DiscoveryIndex

    series_files(tmp_path / "in", n=3)
    (tmp_path / "in" / "notes.txt").write_text("x")
    index = DiscoveryIndex()
    first = discover(tmp_path / "in", index=index)
    index.save(tmp_path / "index.json", follow_symlinks=False)
    reloaded = DiscoveryIndex.load(tmp_path / "index.json", follow_symlinks=False)

    def no_reading(path):
        raise AssertionError(f"{path} was read although it is unchanged")

    monkeypatch.setattr(discover_module, "classify", no_reading)
    monkeypatch.setattr(discover_module, "read_header", no_reading)
    again = discover(tmp_path / "in", index=reloaded)
    assert again == first


def test_index_entry_of_a_changed_file_is_not_used(tmp_path):
    from bidsdeid.discover import DiscoveryIndex

    files = series_files(tmp_path / "in", n=2)
    index = DiscoveryIndex()
    discover(tmp_path / "in", index=index)
    files[0].write_bytes(b"")
    found = discover(tmp_path / "in", index=index)
    assert [(f.path, f.reason) for f in found.failures] == [(files[0], "empty file")]


def _variants(root):
    """Files that exercise both ways of reading a header: plain, odd and broken."""
    from badinputs import bad_dicom_bytes
    from pydicom.uid import ImplicitVRLittleEndian

    from bidsdeid.deid.synthetic import mr_image

    files = [write(mr_slice(), root / "plain"), write(mr_slice(), root / "bare", preamble=False)]
    implicit = mr_slice(instance=7)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    files.append(write(implicit, root / "implicit"))
    for name, patient_id in (("blank_id", "   "), ("two_ids", "A1\\B2"), ("padded", " X9 "),
                             ("latin1", "Jos\xe9")):
        ds = mr_slice(patient_id)
        if name == "latin1":
            ds.SpecificCharacterSet = "ISO_IR 100"
        files.append(write(ds, root / name))
    odd_number = mr_slice(instance=3)
    odd_number.InstanceNumber = "+0012"
    files.append(write(odd_number, root / "odd_number"))
    files.append(write(mr_image(instance=2), root / "nested_and_private"))
    for name, (data, _) in bad_dicom_bytes().items():
        (root / f"bad_{name}.dcm").write_bytes(data)
        files.append(root / f"bad_{name}.dcm")
    return files


def test_reading_by_byte_spans_agrees_with_pydicom(tmp_path, monkeypatch):
    import bidsdeid.discover as discover_module

    files = _variants(tmp_path)
    by_spans = {path: discover_module.classify(path)[0] for path in files}
    monkeypatch.setattr(discover_module, "_read_spans_record", lambda path: None)
    by_pydicom = {path: discover_module.classify(path)[0] for path in files}
    differ = {p.name: (by_spans[p], by_pydicom[p]) for p in files if by_spans[p] != by_pydicom[p]}
    assert not differ, f"byte-span reading disagrees with pydicom: {differ}"
    plain = tmp_path / "plain"
    assert discover_module._read_spans_record(plain) is None  # patched: sanity
    monkeypatch.undo()
    assert discover_module._read_spans_record(plain) == by_pydicom[plain], \
        "the common case must take the byte-span path"
