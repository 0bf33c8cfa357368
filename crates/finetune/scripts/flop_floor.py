#!/usr/bin/env python3
"""The GEMM arithmetic of the fine-tuning recipe and the least time it can take on a machine.

Counts the multiply-adds of the convolutions exactly as this project computes them (Winograd
F(4x4,3x3) or F(2x2,3x3) per layer as vgg-extract picks it, im2col for the 3-channel first
layer; tile counts rounded up), for
  1. the stored maps (vgg-activations: VGG16 up to LAYER at SIZE pixels, every view), and
  2. the finetune stage (trained layers: forward, kernel gradients, input gradients between
     trained layers; the head-only epochs: forward; validation after each epoch; the final
     evaluation and validation predictions), per member,
then divides by a measured peak (GFLOP/s, e.g. from
`cargo run -p vgg-extract --example fma_peak`). Transforms, pooling, the head and the
optimiser are left out, so the times printed are floors: no code can go below them on that
machine without computing less.

    python3 crates/finetune/scripts/flop_floor.py --peak 78.6
"""
import argparse
import math

VGG16 = [  # (name, c_in, c_out, pool after)
    ("conv1_1", 3, 64, False), ("conv1_2", 64, 64, True),
    ("conv2_1", 64, 128, False), ("conv2_2", 128, 128, True),
    ("conv3_1", 128, 256, False), ("conv3_2", 256, 256, False), ("conv3_3", 256, 256, True),
    ("conv4_1", 256, 512, False), ("conv4_2", 512, 512, False), ("conv4_3", 512, 512, True),
    ("conv5_1", 512, 512, False), ("conv5_2", 512, 512, False), ("conv5_3", 512, 512, True),
]


def inference_gemm_flops(h, w, c, o):
    """vgg-extract's forward: im2col for c <= 3, else F4 while 36*4*c*o <= 12 MiB, else F2."""
    if c <= 3:
        return 2 * h * w * 9 * c * o
    m = 4 if 36 * 4 * c * o <= 12 << 20 else 2
    tiles = math.ceil(h / m) * math.ceil(w / m)
    return 2 * (m + 2) ** 2 * tiles * c * o


def training_gemm_flops(h, w, c, o):
    """finetune's F(4x4,3x3): one GEMM of 36 positions over the tiles (forward, kernel
    gradient or input gradient each cost the same)."""
    return 2 * 36 * math.ceil(h / 4) * math.ceil(w / 4) * c * o


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peak", type=float, required=True, help="GFLOP/s of all threads")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--stored", default="conv5_1", help="the stored layer (maps)")
    ap.add_argument("--train-from", default="conv5_2")
    ap.add_argument("--images", type=int, default=5000, help="photos whose maps are stored")
    ap.add_argument("--train-images", type=int, default=3750)
    ap.add_argument("--val-images", type=int, default=750)
    ap.add_argument("--eval-images", type=int, default=1250)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--frozen-epochs", type=int, default=1)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--per-member-frozen", action="store_true")
    a = ap.parse_args()

    names = [n for n, *_ in VGG16]
    s, maps, shapes = a.size, 0, {}
    for name, c, o, pool in VGG16:
        shapes[name] = (s, s, c, o)
        if names.index(name) <= names.index(a.stored):
            maps += inference_gemm_flops(s, s, c, o)
        if pool:
            s //= 2
    top = names[names.index(a.stored) + 1:]
    first = top.index(a.train_from)
    fwd = sum(training_gemm_flops(*shapes[n]) for n in top)
    # Trained layers: kernel gradient each; input gradient of each trained layer but the first.
    bwd = sum(training_gemm_flops(*shapes[n]) for n in top[first:])
    bwd += sum(training_gemm_flops(*shapes[n]) for n in top[first + 1:])
    rows, val, ev = (a.train_images * a.views, a.val_images * a.views, a.eval_images * a.views)
    trained = a.epochs - a.frozen_epochs
    # Per member: the trained epochs and their validations, then the evaluation and
    # validation predictions.
    member = trained * rows * (fwd + bwd) + trained * val * fwd + (ev + val) * fwd
    # The head-only epochs' features (every training row and validation view), computed once
    # for the stage; `--per-member-frozen` counts them per member and per head-only epoch
    # instead, as the code did before that.
    if a.per_member_frozen:
        member += a.frozen_epochs * (rows + val) * fwd
        once = 0
    else:
        once = (rows + val) * fwd if a.frozen_epochs > 0 else 0
    stage = once + a.members * member
    maps_all = a.images * a.views * maps
    peak = a.peak * 1e9
    print(f"maps: {maps / 1e9:.2f} GFLOP a pass, {a.images * a.views} passes, "
          f"{maps_all / 1e12:.1f} TFLOP, floor {maps_all / peak / 60:.1f} min")
    print(f"finetune: {(fwd + bwd) / 1e9:.3f} GFLOP a trained row, {fwd / 1e9:.3f} a forward "
          f"row; {once / 1e12:.1f} TFLOP once, {member / 1e12:.1f} a member, "
          f"{stage / 1e12:.1f} for {a.members}, floor {stage / peak / 60:.1f} min")
    print(f"empty cache floor {(maps_all + stage) / peak / 60:.1f} min at {a.peak} GFLOP/s")


if __name__ == "__main__":
    main()
