"""The CLI on small hand-made inputs: bad files, new sessions, config files, user heuristics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from dicomfactory import mr_slice, write
from pydicom.uid import generate_uid
from treeutil import run_cli, tree_hashes


def t1_series(root, patient="MRN0001", study=None, study_date="20240131", n=4):
    study, series = study or generate_uid(), generate_uid()
    for i in range(n):
        ds = mr_slice(patient, study, series, instance=i + 1, rows=16)
        ds.StudyDate = study_date
        write(ds, root / f"{series[-8:]}_{i}.dcm")
    return study


def test_bad_files_are_named_and_the_rest_is_converted(tmp_path):
    src = tmp_path / "in"
    t1_series(src)
    (src / "zero.dcm").write_bytes(b"")
    good = next(src.glob("*_0.dcm")).read_bytes()
    (src / "truncated.dcm").write_bytes(good[:400])
    (src / "readme.dcm").write_text("not an image\n")
    proc = run_cli(src, tmp_path / "out", "participant", "--no-deface")
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    for name, reason in (("zero.dcm", "empty file"), ("truncated.dcm", "truncated DICOM"),
                         ("readme.dcm", "not DICOM")):
        assert any(name in line and reason in line for line in lines), f"{name}: {lines}"
    assert list((tmp_path / "out").glob("sub-*/ses-01/anat/*_T1w.nii.gz"))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the CLI as an unprivileged user")
def test_unreadable_file_is_named_and_the_rest_is_converted():
    # pytest's tmp_path lives in a root-only folder: use one the unprivileged user can reach
    tmp_path = Path(tempfile.mkdtemp(prefix="bidsdeid-unreadable-"))
    src = tmp_path / "in"
    t1_series(src)
    locked = src / "locked.dcm"
    shutil.copyfile(next(src.glob("*_0.dcm")), locked)
    locked.chmod(0)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path != locked:
            path.chmod(0o777 if path.is_dir() else 0o644)
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           sys.executable, "-m", "bidsdeid", str(src), str(tmp_path / "out"),
                           "participant", "--no-deface"],
                          capture_output=True, text=True, env=env, check=False)
    try:
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert any("locked.dcm" in line and "unreadable" in line
                   for line in proc.stderr.splitlines()), proc.stderr[-2000:]
        assert list((tmp_path / "out").glob("sub-*/ses-01/anat/*_T1w.nii.gz"))
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_new_session_is_added_without_touching_the_first(tmp_path):
    src = tmp_path / "in"
    t1_series(src / "visit1", study_date="20230105")
    assert run_cli(src, tmp_path / "out", "participant", "--no-deface").returncode == 0
    first = tree_hashes(tmp_path / "out" / next(p.name for p in (tmp_path / "out").glob("sub-*")))
    t1_series(src / "visit2", study_date="20240210")
    assert run_cli(src, tmp_path / "out", "participant", "--no-deface").returncode == 0
    subject = next((tmp_path / "out").glob("sub-*"))
    assert sorted(p.name for p in subject.glob("ses-*")) == ["ses-01", "ses-02"]
    after = tree_hashes(subject)
    assert {k: v for k, v in after.items() if k.startswith("ses-01")} == first


def test_config_file_sets_options(tmp_path):
    src = tmp_path / "in"
    t1_series(src)
    config = tmp_path / "bidsdeid.toml"
    config.write_text('deface = false\nprivate_dir = "secrets"\n[deid]\nretain_long_dates = "off"\n')
    proc = run_cli(src, tmp_path / "out", "participant", "--config", config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "secrets" / "pseudonym.key").exists(), "private_dir from the config file"
    scans = next((tmp_path / "out").glob("sub-*/ses-01/*_scans.tsv")).read_text()
    assert scans.splitlines()[1].endswith("\tn/a"), "dates removed: acq_time must be n/a"


def test_user_mapping_gives_the_labels(tmp_path):
    src = tmp_path / "in"
    t1_series(src, patient="MRN0001")
    mapping = tmp_path / "map.tsv"
    mapping.write_text("patient_id\tparticipant_id\nMRN0001\tsub-control01\n")
    proc = run_cli(src, tmp_path / "out", "participant", "--label-mapping", mapping, "--no-deface")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in (tmp_path / "out").glob("sub-*")] == ["sub-control01"]


def test_python_heuristic_escape_hatch(tmp_path):
    src = tmp_path / "in"
    t1_series(src)
    plugin = tmp_path / "mine.py"
    plugin.write_text(
        "from bidsdeid.records import BidsTarget\n"
        "def infotodict(series):\n"
        "    return BidsTarget('anat', 'T2w', (('acq', 'custom'),))\n")
    proc = run_cli(src, tmp_path / "out", "participant", "--heuristic", plugin, "--no-deface")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "out").glob("sub-*/ses-01/anat/*_acq-custom_T2w.nii.gz"))


def test_version_flag():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("bidsdeid ")


@pytest.mark.parametrize("extra", [["--n-procs", "2"], ["--n-procs", "2", "--mem-gb", "0.5"]])
def test_worker_processes_give_the_serial_output(tmp_path, extra):
    src = tmp_path / "in"
    for visit, date in (("a", "20230105"), ("b", "20240210")):
        t1_series(src / visit, study_date=date)
        t1_series(src / visit, study_date=date)
    private = tmp_path / "private"
    common = ["participant", "--no-deface", "--private-dir", private]
    assert run_cli(src, tmp_path / "serial", *common).returncode == 0
    proc = run_cli(src, tmp_path / "parallel", *common, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree_hashes(tmp_path / "parallel") == tree_hashes(tmp_path / "serial")
