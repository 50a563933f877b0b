"""containers/slurm_array.sh submitted to a real single-node SLURM on localhost: one array task per
participant, all writing into one OUTPUT_DIR, gives exactly what a serial run gives."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from slurmcluster import SlurmCluster, SlurmUnavailable, start_cluster, stop_cluster
from treeutil import run_cli, tree_hashes

from bidsdeid.demo import make_demo

SLURM_SCRIPT = Path(__file__).resolve().parents[1] / "containers" / "slurm_array.sh"

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm_cluster():
    try:
        cluster = start_cluster(cpus=2)
    except SlurmUnavailable as exc:
        pytest.skip(f"no single-node SLURM on localhost: {exc}")
    yield cluster
    stop_cluster(cluster)


def test_array_job_of_three_participants_matches_a_serial_run(slurm_cluster: SlurmCluster, tmp_path):
    manifest = make_demo(tmp_path / "input", n_patients=3, seed=2)
    private = tmp_path / "private"
    labels = run_cli(manifest.root, tmp_path / "bids", "participant", "--private-dir", private,
                     "--list-participants", check=True).stdout.split()
    assert len(labels) == 3, f"expected 3 demo participants, got {labels}"
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n")
    run_cli(manifest.root, tmp_path / "serial", "participant", "--private-dir", private,
            "--no-deface", check=True)
    # One CPU per task, so that two of the three tasks run at once on the 2-CPU node.
    submitted = slurm_cluster.run(
        "sbatch", "--wait", f"--array=1-{len(labels)}", "--cpus-per-task=1", "--mem=512M",
        f"--chdir={tmp_path}", f"--output={private}/logs/slurm-%A_%a.out",
        SLURM_SCRIPT, manifest.root, tmp_path / "bids", private, labels_file, "--no-deface",
        env={"BIDSDEID": f"{sys.executable} -m bidsdeid"}, timeout=600)
    logs = [path.read_text() for path in sorted((private / "logs").glob("slurm-*.out"))]
    tails = "\n".join(log[-1500:] for log in logs)
    assert submitted.returncode == 0, f"{submitted.stderr}\n{tails}\n{slurm_cluster.logs()}"
    per_task = [re.findall(r"participants\W+(\d+)", log) for log in logs]
    assert per_task == [["1"]] * 3, f"each of the 3 tasks must process one participant:\n{tails}"
    array, serial = tree_hashes(tmp_path / "bids"), tree_hashes(tmp_path / "serial")
    assert sorted(array) == sorted(serial), "the array job wrote a different set of files"
    differing = [rel for rel in serial if array[rel] != serial[rel]]
    assert not differing, f"files whose content differs from the serial run: {differing}"
