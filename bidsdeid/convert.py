"""dcm2niix wrapper, and naming of its outputs (echoes, magnitude/phase) as BIDS targets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bidsdeid.records import BidsTarget

DCM2NIIX_TIMEOUT = 1800


class ConvertError(Exception):
    """dcm2niix failed or produced nothing for a series."""


@dataclass(frozen=True)
class Dcm2niixOutput:
    nifti: Path
    sidecar: Path | None
    extras: tuple[Path, ...]  # .bval, .bvec


def dcm2niix_executable() -> str:
    """The binary shipped by the dcm2niix PyPI package (newer than Debian's), else PATH's."""
    try:
        import dcm2niix
    except ImportError:
        found = shutil.which("dcm2niix")
    else:
        found = dcm2niix.bin if Path(dcm2niix.bin).exists() else shutil.which("dcm2niix")
    if not found:
        raise ConvertError("dcm2niix not found (install the dcm2niix PyPI package)")
    return found


def dcm2niix_version() -> str:
    out = subprocess.run([dcm2niix_executable(), "--version"], capture_output=True, text=True,
                         check=False)
    match = re.search(r"v\d+\.\d+\.\d+\S*", out.stdout + out.stderr)
    return match.group(0) if match else "unknown"


def run_dcm2niix(dicom_dir: Path, out_dir: Path) -> tuple[list[Dcm2niixOutput], str]:
    """Convert one series folder; returns outputs and dcm2niix's messages (for the private log)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # -w 2: when dcm2niix splits a series (mixed geometry), each part gets its own file name, so
    # nothing is overwritten and name_outputs refuses parts it cannot tell apart.
    # -z n: the sanitizer rewrites the header anyway and compresses in that same pass.
    cmd = [dcm2niix_executable(), "-b", "y", "-ba", "y", "-z", "n", "-c", "", "-w", "2",
           "-f", "series", "-o", str(out_dir), str(dicom_dir)]
    # HOME points at the work dir so a user's ~/.dcm2nii.ini cannot change the conversion.
    env = dict(os.environ, HOME=str(out_dir))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, errors="replace",
                              timeout=DCM2NIIX_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConvertError(f"dcm2niix timed out after {DCM2NIIX_TIMEOUT} s") from exc
    messages = proc.stdout + proc.stderr
    outputs = collect_outputs(out_dir)
    if proc.returncode != 0 and not outputs:
        raise ConvertError(f"dcm2niix exited with code {proc.returncode} and wrote no image")
    if not outputs:
        raise ConvertError("dcm2niix wrote no image for this series")
    return outputs, messages


def collect_outputs(out_dir: Path) -> list[Dcm2niixOutput]:
    outputs = []
    for nifti in sorted(out_dir.glob("*.nii.gz")) + sorted(out_dir.glob("*.nii")):
        stem = nifti.name.removesuffix(".gz").removesuffix(".nii")
        sidecar = out_dir / f"{stem}.json"
        extras = tuple(p for p in (out_dir / f"{stem}.bval", out_dir / f"{stem}.bvec") if p.exists())
        outputs.append(Dcm2niixOutput(nifti, sidecar if sidecar.exists() else None, extras))
    return outputs


def _is_phase(sidecar: dict) -> bool:
    image_type = [str(v).upper() for v in sidecar.get("ImageType", [])]
    return "P" in image_type or "PHASE" in image_type


def name_outputs(target: BidsTarget, sidecars: list[dict]) -> list[BidsTarget]:
    """BIDS target for each dcm2niix output of one series (several when it split echoes/parts).

    GRE field-map magnitudes become magnitude1/magnitude2 by echo; other multi-echo series get
    ``echo-N``; a series holding magnitude and phase gets ``part-mag``/``part-phase``.
    """
    is_fmap_magnitude = target.datatype == "fmap" and target.suffix == "magnitude"
    if len(sidecars) == 1 and not is_fmap_magnitude:
        return [target]
    echoes = sorted({int(s.get("EchoNumber", 1)) for s in sidecars})
    has_phase = any(_is_phase(s) for s in sidecars) and not all(_is_phase(s) for s in sidecars)
    named = []
    for sidecar in sidecars:
        echo = int(sidecar.get("EchoNumber", 1))
        if is_fmap_magnitude:
            suffix = "magnitude1" if echoes.index(echo) == 0 else "magnitude2"
            named.append(BidsTarget("fmap", suffix, target.entities))
            continue
        extra = {}
        if len(echoes) > 1:
            extra["echo"] = str(echoes.index(echo) + 1)
        if has_phase:
            extra["part"] = "phase" if _is_phase(sidecar) else "mag"
        named.append(target.with_entities(**extra))
    if len(set(named)) != len(named):
        raise ConvertError("dcm2niix split the series into outputs that cannot be told apart")
    return named


def read_sidecar(output: Dcm2niixOutput) -> dict:
    if output.sidecar is None:
        return {}
    # strict=False: dcm2niix copies control characters of descriptions raw into the JSON
    return json.loads(output.sidecar.read_text(), strict=False)
