"""Write the fuzzing seeds of this folder: ``python tests/fuzz_corpus/make_seeds.py``.

Small valid inputs covering the encodings the scrub path must survive, each carrying the planted
identifiers of ``PLANTED`` (the fuzz tests check that none survives a successful scrub):

* ``explicit_le.dcm``: explicit VR little endian with preamble, ISO_IR 100 name, a nested
  sequence, a private block;
* ``implicit_bare.dcm``: implicit VR little endian without preamble or file meta (old scanners);
* ``undefined_length_sq.dcm``: an undefined-length sequence and item, with their delimiters;
* ``encapsulated.dcm``: encapsulated (JPEG Lossless) pixel data with a basic offset table;
* ``sidecar.json``: a dcm2niix-style sidecar with identifiers in policy and unknown keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEGLosslessSV1

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from dicomfactory import mr_slice, write

PLANTED = ("Fuzzington^Felicity", "FZ004217", "Fuzzington", "Felicity")


def _slice() -> Dataset:
    ds = mr_slice(PLANTED[1], "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                  instance=1, rows=4)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.PatientName = PLANTED[0]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDescription = f"brain for {PLANTED[2]} ({PLANTED[1]})"
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.4"
    ref.PatientName = PLANTED[0]
    ds.ReferencedImageSequence = Sequence([ref])
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", f"tPatientName = {PLANTED[0]}".encode())
    return ds


def main() -> None:
    write(_slice(), HERE / "explicit_le.dcm")
    bare = _slice()
    del bare.file_meta
    bare.save_as(HERE / "implicit_bare.dcm", implicit_vr=True, little_endian=True)
    ds = _slice()
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    write(ds, HERE / "undefined_length_sq.dcm")
    ds = _slice()
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    frame = b"\xff\xd8\xff\xc3\x00\x0b\x08\x00\x04\x00\x04\x01\x01\x11\x00\xff\xd9"
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    write(ds, HERE / "encapsulated.dcm")
    sidecar = {
        "Modality": "MR", "Manufacturer": "Siemens", "SeriesDescription": f"t1 {PLANTED[2]}",
        "ProtocolName": f"{PLANTED[0]}_mprage", "PatientName": PLANTED[0],
        "PatientID": PLANTED[1], "AcquisitionDateTime": "2024-01-31T10:11:12.000000",
        "ImageComments": f"called {PLANTED[3]} on 0612345678", "EchoTime": 0.00246,
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"], "SliceTiming": [0.0, 0.5],
        "PatientAge": "093Y", "InstitutionName": "Fuzz General", "UnknownVendorKey": PLANTED[2],
    }
    (HERE / "sidecar.json").write_text(json.dumps(sidecar, indent=2) + "\n")


if __name__ == "__main__":
    main()
