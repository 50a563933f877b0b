"""Train the defacing U-Net on synthetic heads (CPU, time-boxed, resumable).

    python -m bidsdeid.deface.train --steps 4000 --threads 2 --out models/deface_unet.pt

Needs the ``pydeface`` and ``nilearn`` wheels (``pip install --no-deps``: only their data files
are read) and Debian's ``mricron-data`` (the Colin 27 head); the recipe of the shipped weights
is in ``models/MODEL_CARD.md``. Checkpoints every ``--checkpoint-every`` steps beside ``--out``
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bidsdeid.deface.atlas import COLIN_HEAD, load_or_build_atlas, training_head
from bidsdeid.deface.model import UNet3D
from bidsdeid.deface.synth import Sample, synthesise, to_torch_head


def loss_fn(logits: torch.Tensor, sample: Sample) -> torch.Tensor:
    """Masked binary cross-entropy plus soft Dice, for each output channel."""
    target, valid = sample.target[None], sample.valid[None]
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * valid).sum() / (valid.sum() * target.shape[1]).clamp_min(1)
    prob = torch.sigmoid(logits) * valid
    t = target * valid
    inter = (prob * t).sum((0, 2, 3, 4))
    dice = 1 - (2 * inter + 1) / (prob.sum((0, 2, 3, 4)) + t.sum((0, 2, 3, 4)) + 1)
    return bce + dice.mean()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("models/deface_unet.pt"))
    ap.add_argument("--minutes", type=float, default=45.0, help="wall-time budget")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="stop after this many steps (the learning-rate schedule then follows "
        "steps, not time, so a run is repeatable on any machine)",
    )
    ap.add_argument(
        "--colin-head",
        type=training_head,
        default=COLIN_HEAD,
        help="the Colin 27 head (Debian mricron-data); 'none' to train without it",
    )
    ap.add_argument("--atlas-cache", type=Path, default=Path("/tmp/bidsdeid_deface_atlas"))
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    ap.add_argument(
        "--realistic-contrast",
        type=float,
        default=0.0,
        help="share of samples drawn with a typical T1w/T2w/PD/FLAIR contrast",
    )
    ap.add_argument(
        "--brain-point-share",
        type=float,
        default=0.0,
        help="share of fine samples centred on a random brain point instead of the brain centre",
    )
    ap.add_argument(
        "--csf-width-share",
        type=float,
        default=0.0,
        help="share of samples whose cortex/CSF border is moved by 1-2 voxels (brain mask kept)",
    )
    ap.add_argument(
        "--fine-size",
        type=int,
        default=48,
        help="voxels per side of the fine (2.3-3.4 mm) samples; inference tiles are 64",
    )
    ap.add_argument("--init", type=Path, default=None, help="start from these weights")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    atlas = load_or_build_atlas(args.atlas_cache, args.colin_head)
    heads = [to_torch_head(h) for h in atlas]
    model = UNet3D()
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, weights_only=True)["state_dict"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ckpt = args.out.with_suffix(".ckpt")
    step, elapsed = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
    rng = np.random.default_rng(args.seed + step)
    budget = args.minutes * 60
    start = time.monotonic() - elapsed
    running = None
    while (step < args.steps) if args.steps else (time.monotonic() - start < budget):
        frac = step / args.steps if args.steps else (time.monotonic() - start) / budget
        for group in opt.param_groups:  # cosine decay over the time budget
            group["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        sample = synthesise(
            heads[step % len(heads)],
            rng,
            args.realistic_contrast,
            brain_point_share=args.brain_point_share,
            csf_width_share=args.csf_width_share,
            fine_size=args.fine_size,
        )
        loss = loss_fn(model(sample.image[None]), sample)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 10 == 0:
            print(f"step {step} t={time.monotonic() - start:.0f}s loss={running:.4f}", flush=True)
        if step % args.checkpoint_every == 0:
            _save(ckpt, model, opt, step, time.monotonic() - start)
    _save(ckpt, model, opt, step, time.monotonic() - start)
    torch.save(
        {
            "channels": model.channels,
            "state_dict": model.state_dict(),
            "steps": step,
            "seed": args.seed,
        },
        args.out,
    )
    print(f"saved {args.out} after {step} steps", flush=True)


def _save(path: Path, model, opt, step: int, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed},
        tmp,
    )
    tmp.replace(path)


if __name__ == "__main__":
    main()
