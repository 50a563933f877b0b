"""Defacing / skull-stripping benchmark on the real heads, side by side with peers, in one run.

    .venv/bin/python benchmarks/bench_deface.py [--heads ../shared/data/heads]

Each method runs in its own subprocess (so its peak RSS is its own) over all heads, with
torch's default threads (all cores); wall and CPU seconds are printed per volume (the machine may
be shared: CPU seconds are the steadier figure). Then every
output is scored against the reference masks in benchmarks/reference_masks/ (made by ANTs
registration of a labelled template, see README.md there):
  brain_kept  share of reference-brain voxels left unchanged       (target >= 0.999)
  face_gone   share of reference-face voxels zeroed                 (target >= 0.95)
  ears_gone   share of reference outer-ear voxels zeroed            (no target in the issue)
  dice        skull-strip mask vs reference brain                   (target >= 0.95)
Peers: quickshear (PyPI; needs a brain mask: given deepbet's when deepbet is installed, else
ours) and deepbet (PyPI, ships weights; skull-stripping only). ``bidsdeid-template`` is our
registration fallback (``--deface-method template``): its template and labels are the ones the
reference masks were warped from, so its scores against them are optimistic.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
HEADS = ["chris_t1", "chris_PD", "register_T1_head_ext2", "register_T2w"]


def run_bidsdeid(src: Path, out: Path, method: str = "cnn") -> None:
    from bidsdeid.deface import deface_file

    deface_file(
        src,
        out / f"{src.name.split('.')[0]}_defaced.nii.gz",
        brain_mask=out / f"{src.name.split('.')[0]}_mask.nii.gz",
        qc=False,
        model=_MODEL.get("bidsdeid"),
        method=method,
    )


def run_deepbet(src: Path, out: Path) -> None:
    _MODEL["deepbet"].run(str(src), mask_path=str(out / f"{src.name.split('.')[0]}_mask.nii.gz"))


def run_quickshear(src: Path, out: Path, mask_dir: Path) -> None:
    from quickshear import quickshear

    name = src.name.split(".")[0]
    defaced = quickshear(nib.load(src), nib.load(mask_dir / f"{name}_mask.nii.gz"), buff=10)
    defaced.to_filename(out / f"{name}_defaced.nii.gz")


_MODEL: dict[str, object] = {}


def worker(method: str, heads: Path, out: Path, mask_dir: Path | None) -> None:
    start = time.perf_counter()
    if method == "bidsdeid":
        from bidsdeid.deface import load_model

        _MODEL["bidsdeid"] = load_model()
    elif method == "bidsdeid-template":
        import bidsdeid.deface.template  # noqa: F401
    elif method == "deepbet":
        from deepbet import BrainExtraction

        _MODEL["deepbet"] = BrainExtraction(no_gpu=True)
    startup = time.perf_counter() - start
    # One untimed warm-up volume per method (lazy imports, kernel selection, allocator).
    warm_out = out / "warmup"
    warm_out.mkdir()
    _run(method, heads / f"{HEADS[-1]}.nii.gz", warm_out, mask_dir)
    times, cpu = {}, {}
    for name in HEADS:
        src = heads / f"{name}.nii.gz"
        t, c = time.perf_counter(), time.process_time()
        _run(method, src, out, mask_dir)
        times[name] = time.perf_counter() - t
        cpu[name] = time.process_time() - c
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"startup": startup, "seconds": times, "cpu": cpu, "peak_mb": peak_mb}))


def _run(method: str, src: Path, out: Path, mask_dir: Path | None) -> None:
    if method == "bidsdeid":
        run_bidsdeid(src, out)
    elif method == "bidsdeid-template":
        run_bidsdeid(src, out, method="template")
    elif method == "deepbet":
        run_deepbet(src, out)
    else:
        run_quickshear(src, out, mask_dir)


def spawn(method: str, heads: Path, out: Path, mask_dir: Path | None) -> dict | None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", method, "--heads", str(heads), "--out", str(out)]
    if mask_dir is not None:
        cmd += ["--mask-dir", str(mask_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"{method}: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(name: str, heads: Path, refs: Path, out: Path) -> dict[str, float]:
    original = np.asanyarray(nib.load(heads / f"{name}.nii.gz").dataobj)
    ref_brain = np.asanyarray(nib.load(refs / f"{name}_brain.nii.gz").dataobj) > 0
    ref_face = np.asanyarray(nib.load(refs / f"{name}_face.nii.gz").dataobj) > 0
    result: dict[str, float] = {}
    defaced_path = out / f"{name}_defaced.nii.gz"
    if defaced_path.exists():
        defaced = np.asanyarray(nib.load(defaced_path).dataobj).reshape(original.shape)
        result["brain_kept"] = float((defaced[ref_brain] == original[ref_brain]).mean())
        result["face_gone"] = float((defaced[ref_face] == 0).mean())
        ears_path = refs / f"{name}_ears.nii.gz"
        if ears_path.exists():
            ref_ears = np.asanyarray(nib.load(ears_path).dataobj) > 0
            result["ears_gone"] = float((defaced[ref_ears] == 0).mean())
    mask_path = out / f"{name}_mask.nii.gz"
    if mask_path.exists():
        mask = np.asanyarray(nib.load(mask_path).dataobj).reshape(original.shape) > 0
        result["dice"] = float(2 * (mask & ref_brain).sum() / (mask.sum() + ref_brain.sum()))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=Path, default=HERE.parent.parent / "shared" / "data" / "heads")
    ap.add_argument("--refs", type=Path, default=HERE / "reference_masks")
    ap.add_argument("--worker")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--mask-dir", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.heads, args.out, args.mask_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"bidsdeid": spawn("bidsdeid", args.heads, tmp / "bidsdeid", None)}
        runs["bidsdeid-template"] = spawn(
            "bidsdeid-template", args.heads, tmp / "bidsdeid-template", None
        )
        runs["deepbet"] = spawn("deepbet", args.heads, tmp / "deepbet", None)
        mask_source = "deepbet" if runs["deepbet"] else "bidsdeid"
        runs[f"quickshear(+{mask_source} mask)"] = spawn(
            "quickshear", args.heads, tmp / "quickshear", tmp / mask_source
        )
        dirs = {m: m for m in ("bidsdeid", "bidsdeid-template", "deepbet")}
        print(
            f"{'method':28s} {'volume':24s} {'wall_s':>7s} {'cpu_s':>6s} {'brain_kept':>10s} "
            f"{'face_gone':>9s} {'ears_gone':>9s} {'dice':>6s}"
        )
        for method, run in runs.items():
            if run is None:
                continue
            out = tmp / dirs.get(method, "quickshear")
            for name in HEADS:
                s = score(name, args.heads, args.refs, out)
                cells = [
                    f"{s[k]:.4f}" if k in s else "-"
                    for k in ("brain_kept", "face_gone", "ears_gone", "dice")
                ]
                print(
                    f"{method:28s} {name:24s} {run['seconds'][name]:7.2f} {run['cpu'][name]:6.2f} "
                    f"{cells[0]:>10s} {cells[1]:>9s} {cells[2]:>9s} {cells[3]:>6s}"
                )
            print(f"{method:28s} startup {run['startup']:.1f} s, peak RSS {run['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
