"""Score weights on fresh synthetic pairs (never on real heads): the basis for thresholds.

    python -m bidsdeid.deface.validate models/deface_unet.pt --samples 24 --seed 12345
    python -m bidsdeid.deface.validate models/deface_unet.pt --scans 8 [--flip] [--fine-spacing MM]
        [--scan-size 184 --scan-spacing 1.2] [--csf-width-share 1] [--thresholds 0.5]

Draws ``--samples`` pairs per atlas head with the training synthesis (half with preset
contrasts, half with random ones) and prints brain and face Dice at several thresholds, pooled
over the pairs (many brain-centred pairs hold little or no face). With ``--scans`` it instead
synthesises whole-head volumes like scans (2 mm, 256 mm field of view) and runs the whole
inference pipeline (both passes, native masks) on them: per-volume brain Dice by threshold.
``--csf-width-share`` moves the cortex/CSF border in that share of the volumes, as training can.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bidsdeid.deface.atlas import COLIN_HEAD, load_or_build_atlas, training_head
from bidsdeid.deface.infer import FINE_SPACING, FLIP_AVERAGE, load_weights, predict_masks
from bidsdeid.deface.synth import synthesise, to_torch_head

THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
SCAN = (128, 2.0)  # voxels per side, mm


def overlap(
    prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, threshold: float
) -> np.ndarray:
    """(intersection, predicted + target) voxel counts of ``prob > threshold`` against
    ``target > 0.5`` over valid voxels."""
    p = (prob > threshold) & valid
    t = (target > 0.5) & valid
    return np.array([int((p & t).sum()), int(p.sum() + t.sum())])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--samples", type=int, default=24, help="pairs per atlas head")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--colin-head", type=training_head, default=COLIN_HEAD)
    ap.add_argument("--atlas-cache", type=Path, default=Path("/tmp/bidsdeid_deface_atlas"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scans", type=int, default=0, help="whole-pipeline volumes per head")
    ap.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=FLIP_AVERAGE,
        help="scans with left-right test-time averaging (default: the shipped setting)",
    )
    ap.add_argument(
        "--fine-spacing",
        type=float,
        default=FINE_SPACING,
        help="scans with this fine-pass spacing in mm (the shipped one by default)",
    )
    ap.add_argument("--scan-size", type=int, default=SCAN[0], help="scan voxels per side")
    ap.add_argument("--scan-spacing", type=float, default=SCAN[1], help="scan voxel size, mm")
    ap.add_argument("--csf-width-share", type=float, default=0.0)
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_weights(args.weights)
    heads = load_or_build_atlas(args.atlas_cache, args.colin_head)
    if args.scans:
        scan = (args.scan_size, args.scan_spacing)
        validate_scans(
            model,
            heads,
            args.scans,
            args.seed,
            scan,
            flip=args.flip,
            fine_spacing=args.fine_spacing,
            csf_width_share=args.csf_width_share,
            thresholds=tuple(args.thresholds),
        )
        return
    print(
        "head            contrast  "
        + "  ".join(f"brain@{t}" for t in THRESHOLDS)
        + "  "
        + "  ".join(f"face@{t}" for t in THRESHOLDS)
    )
    for head in heads:
        rng = np.random.default_rng(args.seed)
        counts = {c: np.zeros((2 * len(THRESHOLDS), 2)) for c in ("preset", "random")}
        torch_head = to_torch_head(head)
        for i in range(args.samples):
            contrast = "preset" if i % 2 == 0 else "random"
            sample = synthesise(torch_head, rng, 1.0 if contrast == "preset" else 0.0)
            with torch.no_grad():
                prob = torch.sigmoid(model(sample.image[None]))[0]
            valid = sample.valid[0] > 0
            counts[contrast] += np.array(
                [overlap(prob[c], sample.target[c], valid, t) for c in (0, 1) for t in THRESHOLDS]
            )
        for contrast, c in counts.items():
            scores = 2 * c[:, 0] / np.maximum(c[:, 1], 1)
            print(f"{head.name:15s} {contrast:8s}  " + "  ".join(f"{v:8.3f}" for v in scores))


@torch.no_grad()
def validate_scans(
    model: torch.nn.Module,
    heads,
    count: int,
    seed: int,
    scan: tuple[int, float] = SCAN,
    *,
    flip: bool = FLIP_AVERAGE,
    fine_spacing: float = FINE_SPACING,
    csf_width_share: float = 0.0,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> None:
    """Whole-pipeline brain Dice on synthetic scans (``scan``: voxels per side, mm), per volume
    and threshold, with the given inference settings; then mean Dice, precision and recall
    (precision below recall: masks too large; above: too small, as on the real heads)."""
    print("head            contrast  " + "  ".join(f"brain@{t}" for t in thresholds))
    totals = np.zeros((3, len(thresholds)))  # Dice, precision, recall
    for head in heads:
        rng = np.random.default_rng(seed)
        torch_head = to_torch_head(head)
        for i in range(count):
            contrast = "preset" if i % 2 == 0 else "random"
            sample = synthesise(
                torch_head,
                rng,
                1.0 if contrast == "preset" else 0.0,
                scan=scan,
                csf_width_share=csf_width_share,
            )
            image = sample.image[0].numpy()
            valid = sample.valid[0].numpy() > 0
            truth = sample.target[0].numpy() > 0.5
            scores = np.zeros((3, len(thresholds)))
            for k, t in enumerate(thresholds):
                brain = predict_masks(
                    model, image, sample.affine, t, flip=flip, fine_spacing=fine_spacing
                ).brain
                p, g = brain & valid, truth & valid
                hits = (p & g).sum()
                scores[:, k] = (
                    2 * hits / max(p.sum() + g.sum(), 1),
                    hits / max(p.sum(), 1),
                    hits / max(g.sum(), 1),
                )
            totals += scores
            print(
                f"{head.name:15s} {contrast:8s}  " + "  ".join(f"{v:8.4f}" for v in scores[0]),
                flush=True,
            )
    mean = totals / (count * len(heads))
    for name, row in zip(("mean", "precision", "recall"), mean):
        print(f"{name:24s}  " + "  ".join(f"{v:8.4f}" for v in row))


if __name__ == "__main__":
    main()
