"""Upsample one image with a pixel-token super-resolution model: PNG in, PNG out.

    blockwise upsample shoe.png shoe_28.png --mode blockwise -k 10 --eps 2

The input is read as greyscale. An image of the model's low resolution (7×7 for the ×4 model) is used as it is; any
other size is first reduced to it by area averaging (so a 28×28 original gives its own low-resolution version). The
output is the model's high-resolution image (28×28), optionally enlarged with ``--scale`` for viewing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import (K_AUTO_HELP, UserError, add_k, add_threads, add_tree, add_weights, at_least, chosen_ks,
                  command_parser, existing_file, load, make_tree, run, with_weights)

DEFAULT_CHECKPOINT = str(Path(__file__).parent / "assets" / "sr_x4.safetensors")  # shipped: the Fine-tuning (Both) model
MODEL_FIX = "pass --checkpoint with a model from recipes/sr/train.py (its .json beside it), or leave it out"
IMAGE_FIX = "give a PNG image (or any other format Pillow reads) as the input"


def read_low_res(path: Path, low: int):
    """The greyscale image at ``path`` as (low, low) uint8, and a note on any conversion made."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    existing_file(path, "image", IMAGE_FIX)
    try:
        with Image.open(path) as image:
            image.load()
            mode, size = image.mode, image.size
            grey = image.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable image ({error}): {IMAGE_FIX}") from None
    notes = []
    if mode not in ("L", "1", "P"):
        notes.append(f"converted {mode} to greyscale")
    if size != (low, low):
        grey = grey.resize((low, low), Image.Resampling.BOX)  # area averaging, as the training inputs were made
        notes.append(f"reduced {size[0]}×{size[1]} to {low}×{low} by area averaging")
    return np.asarray(grey, dtype=np.uint8), notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = command_parser("upsample", __doc__)
    ap.add_argument("input", help="image file to upsample (PNG or anything Pillow reads)")
    ap.add_argument("output", help="PNG file to write")
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                    help=f"model from recipes/sr/train.py (default {DEFAULT_CHECKPOINT})")
    ap.add_argument("--mode", choices=["greedy", "blockwise"], default="blockwise",
                    help="blockwise (default) or plain greedy decoding")
    add_k(ap, "auto", "block size: heads p1..pk used, 1 (greedy) to all the model has, or " + K_AUTO_HELP)
    add_tree(ap)
    add_weights(ap, "float32", "weight precision (default float32)")
    ap.add_argument("--eps", type=at_least(0, float), default=0.0, help="ε: accept a proposal within ε intensity "
                    "levels of the argmax (default 0: exact, identical to greedy)")
    ap.add_argument("--min-block", type=at_least(1), default=1,
                    help="ℓ: accept at least ℓ pixels per iteration (default 1)")
    ap.add_argument("--scale", type=at_least(1), default=1,
                    help="enlarge the output by this factor (nearest neighbour; default 1)")
    ap.add_argument("--compare", action="store_true", help="also decode greedily: report the speedup and whether "
                                                           "the images are identical")
    add_threads(ap, 1, "CPU threads (default 1)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run("upsample", upsample, parse_args(argv))


def load_model(checkpoint: str):
    """(model, factor, high resolution, pixel layout) of a checkpoint written by recipes/sr/train.py."""
    from .tasks import superres as sr

    def read(path):
        model, meta = sr.load_sr(path)
        return model, int(meta["factor"]), int(meta["high"]), meta.get("source", "raster")

    path = existing_file(checkpoint, "super-resolution checkpoint", MODEL_FIX)
    return load(read, path, "super-resolution checkpoint", MODEL_FIX)


def upsample(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from .decoding import Acceptance
    from .tasks import superres as sr

    torch.set_num_threads(args.threads)
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise UserError(f"{output}: the output must be a .png file")
    if not output.parent.is_dir():
        raise UserError(f"{output.parent}: no such folder for the output")
    model, factor, high, layout = load_model(args.checkpoint)
    model = with_weights(model, args.weights, args.checkpoint)
    low = high // factor
    k = args.k
    if args.mode == "blockwise" and k != "auto" and k > model.num_heads:
        raise UserError(f"-k {k} is more than the {model.num_heads} heads this model has: use -k 1..{model.num_heads}")
    pixels, notes = read_low_res(Path(args.input), low)
    for note in notes:
        print(f"note: {note}")
    lows = pixels[None]
    rule = Acceptance("distance", eps=args.eps, min_block=args.min_block) if args.eps > 0 else \
        Acceptance(min_block=args.min_block)
    if args.mode == "greedy":
        out = sr.upsample(model, lows, factor, "greedy", layout=layout)
        label = "greedy"
    else:
        tree = make_tree(args, model.num_heads)
        out = sr.upsample(model, lows, factor, "blockwise", k=k, accept=rule, layout=layout, tree=tree)
        label = f"blockwise k={k}{f' ({chosen_ks(out.stats, tree)})' if k == 'auto' else ''}, {rule.describe()}"
        label += f", {tree.describe()}" if tree is not None else ""
    image = Image.fromarray(out.images[0])
    if args.scale > 1:
        image = image.resize((high * args.scale, high * args.scale), Image.Resampling.NEAREST)
    try:
        image.save(output)
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror or error}") from None
    s = out.stats
    print(f"{label}: {low}×{low} -> {high}×{high}, {s.tokens} pixels in {s.iterations} iterations "
          f"({s.calls} model calls), mean accepted block size {s.mean_accepted:.2f}, {out.seconds:.2f} s")
    if args.compare:
        ref = sr.upsample(model, lows, factor, "greedy", layout=layout)
        diff = abs(ref.images.astype(int) - out.images.astype(int))
        same = "identical images" if not diff.any() else \
            f"{int((diff > 0).sum())} of {diff.size} pixels differ from greedy (at most by {int(diff.max())})"
        print(f"greedy: {ref.stats.iterations} iterations, {ref.seconds:.2f} s; "
              f"speedup {ref.seconds / out.seconds:.2f}×; {same}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
