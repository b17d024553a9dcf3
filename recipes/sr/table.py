#!/usr/bin/env python3
"""Table 2 on Fashion-MNIST: mean accepted block size, wall-clock speedup and image quality of blockwise decoding.

Reads the Regular and Fine-tuning models of recipes/sr/train.py (``--root``/regular, ``--root``/finetune) and decodes a
fixed set of test images (the first ``--n`` of the t10k file) with greedy decoding and with blockwise decoding for every
k in ``--ks``, under four regimes: Regular (frozen base, exact), Approximate (frozen base, ε), Fine tuning (exact),
Both (fine tuned, ε); plus the minimum block sizes ℓ in ``--min-blocks`` on top of ε. Every configuration runs at
batch ``--batch`` over all n images and at batch 1 over the first ``--n-batch1``; the speedup is over greedy decoding
of the same model, images and batch, timed in the same process (one run each, after a warm-up decode).

Writes ``<out>/summary.json`` (a flat list of records: regime, k, eps, min_block, batch, mean_accepted, speedup, psnr,
psnr_greedy (greedy of the same model vs the originals), psnr_vs_greedy, ssim, n; null where a field does not apply), ``<out>/summary.md``, ``<out>/grid_<model>.png`` (low-res |
bicubic | greedy | blockwise exact | blockwise ε | original) and ``<out>/grid_lfw.png`` (LFW faces, out of domain).

    OMP_WAIT_POLICY=PASSIVE python recipes/sr/table.py --root runs/sr/x4 --n 32 --n-batch1 8
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from blockwise import Acceptance  # before torch: importing blockwise sets OMP_WAIT_POLICY
from blockwise.eval.timing import environment
from blockwise.tasks import superres as sr

import torch

PAPER = {2: (1.07, 1.24, 1.59, 1.96), 4: (1.08, 1.36, 2.11, 3.75), 6: (1.09, 1.38, 2.23, 5.25),
         8: (1.09, 1.49, 2.17, 6.36), 10: (1.10, 1.40, 2.04, 6.79)}
MODELS = {"regular": ("Regular", "Approximate", "Greedy"), "finetune": ("Fine tuning", "Both", "Greedy (fine-tuned)")}


def record(regime, k, eps, min_block, batch, mean_accepted, speedup, psnr, psnr_greedy, psnr_vs_greedy, ssim,
           n) -> dict:
    """psnr, psnr_greedy: against the original images (psnr_greedy: greedy decoding of the same model, same images);
    psnr_vs_greedy: of the output against greedy's output (100: identical)."""
    def r(x, d=3):
        return None if x is None else round(float(x), d)
    return {"regime": regime, "k": k, "eps": eps, "min_block": min_block, "batch": batch,
            "mean_accepted": r(mean_accepted), "speedup": r(speedup), "psnr": r(psnr, 2),
            "psnr_greedy": r(psnr_greedy, 2), "psnr_vs_greedy": r(psnr_vs_greedy, 2), "ssim": r(ssim, 4), "n": n}


def run_model(model, meta, highs, batch, ks, eps, min_blocks, names, log) -> tuple[list[dict], dict]:
    """Every decoding configuration of one model at one batch size. Returns records and the decoded images."""
    exact_name, approx_name, greedy_name = names
    factor, layout = meta["factor"], meta.get("source", "raster")
    lows = sr.downsample(highs, factor)
    n = len(highs)
    sr.upsample(model, lows[:1], factor, "blockwise", k=max(ks), batch_size=1, layout=layout)  # warm-up, not timed
    ref = sr.upsample(model, lows, factor, "greedy", batch_size=batch, layout=layout)
    greedy_psnr = sr.psnr(ref.images, highs)
    records = [record(greedy_name, 1, None, None, batch, 1.0, 1.0, greedy_psnr, greedy_psnr, None,
                      sr.ssim(ref.images, highs), n)]
    log(f"  {greedy_name} batch {batch}: {ref.seconds:.1f} s, PSNR {records[0]['psnr']}")
    images = {"greedy": ref.images}
    configs = [(k, exact_name, None, 1) for k in ks] + [(k, approx_name, eps, 1) for k in ks]
    configs += [(k, approx_name, eps, m) for k in ks for m in min_blocks]
    for k, regime, e, m in configs:
        accept = Acceptance("distance", eps=e, min_block=m) if e is not None else Acceptance(min_block=m)
        out = sr.upsample(model, lows, factor, "blockwise", k=k, accept=accept, batch_size=batch, layout=layout)
        rec = record(regime, k, e, m, batch, out.stats.mean_accepted, ref.seconds / out.seconds,
                     sr.psnr(out.images, highs), greedy_psnr, sr.psnr(out.images, ref.images),
                     sr.ssim(out.images, highs), n)
        records.append(rec)
        images[(k, e, m)] = out.images
        log(f"  {regime} k={k} ε={e} ℓ={m} batch {batch}: k̂ {rec['mean_accepted']}, {out.seconds:.1f} s "
            f"({rec['speedup']}×), PSNR {rec['psnr']} (vs greedy {rec['psnr_vs_greedy']})")
    return records, images


def training_info(root: Path) -> dict:
    """Steps and minutes of every stage, from the runs.jsonl the training recipe writes."""
    info = {}
    for stage in ("base", "regular", "finetune"):
        path = root / stage / "runs.jsonl"
        if path.exists():
            runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            info[stage] = {"steps": runs[-1]["step"], "minutes": round(sum(r["run_minutes"] for r in runs), 1),
                           "runs": len(runs), "dev_loss_64": round(runs[-1]["dev_loss_64"], 4)}
    return info


def learning_curve(root: Path, bucket: int) -> list[tuple[str, int, float, float | None]]:
    """(stage, step, mean training loss over the last bucket of steps, eval loss if logged there)."""
    rows = []
    for stage in ("base", "regular", "finetune"):
        path = root / stage / "log.jsonl"
        if not path.exists():
            continue
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        losses: list[float] = []
        for entry in lines:
            losses.append(entry["loss"])
            if entry["step"] % bucket == 0 or "eval_loss" in entry or entry is lines[-1]:
                rows.append((stage, entry["step"], sum(losses) / len(losses), entry.get("eval_loss")))
                losses = []
    return rows


def fmt(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"


def markdown(records, args, info, curve, env, data_info, k_grid) -> str:
    def find(regime, k, batch, eps=None, m=1):
        for r in records:
            if r["regime"] == regime and r["k"] == k and r["batch"] == batch and r["eps"] == eps and \
                    r["min_block"] == m:
                return r
        return None

    b = args.batch
    n = next((r["n"] for r in records if r["batch"] == b), None)
    n1 = next((r["n"] for r in records if r["batch"] == 1), None)
    out = [f"# Table 2 on Fashion-MNIST ×{args.factor} ({28 // args.factor}×{28 // args.factor} → 28×28)", "",
           f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `recipes/sr/table.py` "
           f"from the models in `{args.root}`. Test images: the first {n} of the t10k file (batch {b}); batch-1 "
           f"timings on the first {n1}. ε = {fmt(args.eps, 0)}. Every number below is from these few images and "
           f"one timed run each (after a warm-up) on a 2-core CPU, {args.threads} thread(s), {args.dtype}: few "
           "images, so read speedups to ±10%.",
           ""]
    cubic = next((r for r in records if r["regime"] == "Bicubic"), None)
    for r in records:
        if r["regime"].startswith("Greedy") and r["batch"] == b and cubic and r["psnr"] < cubic["psnr"] - 1.0:
            out += [f"**Warning: {r['regime']} decoding ({fmt(r['psnr'])} dB) is worse than bicubic upsampling "
                    f"({fmt(cubic['psnr'])} dB): this model does not yet draw faithful images, so its accepted block "
                    "sizes say little about the paper's claim (flat or black images are easy to predict). Train "
                    "longer before reading the table.**", ""]
    out += ["## Training", ""]
    for stage, d in info.items():
        out.append(f"- {stage}: {d['steps']} steps in {d['minutes']} min over {d['runs']} run(s); dev loss "
                   f"(64 dev images, nats/pixel) {d['dev_loss_64']}")
    out += ["", "## Mean accepted block size (batch " + str(b) + ")", "",
            "| k | Regular | Approximate (ε=2) | Fine tuning | Both | paper (CelebA): R / A / F / B |",
            "|---|---|---|---|---|---|"]
    for k in args.ks:
        cells = [find("Regular", k, b), find("Approximate", k, b, args.eps), find("Fine tuning", k, b),
                 find("Both", k, b, args.eps)]
        paper = " / ".join(f"{x:.2f}" for x in PAPER.get(k, ())) or "–"
        out.append(f"| {k} | " + " | ".join(fmt(c and c["mean_accepted"]) for c in cells) + f" | {paper} |")
    for batch in (1, b):
        out += ["", f"## Wall-clock speedup over greedy, batch {batch}", "",
                "| k | Regular | Approximate | Fine tuning | Both |", "|---|---|---|---|---|"]
        for k in args.ks:
            cells = [find("Regular", k, batch), find("Approximate", k, batch, args.eps), find("Fine tuning", k, batch),
                     find("Both", k, batch, args.eps)]
            out.append(f"| {k} | " + " | ".join(fmt(c and c["speedup"]) + ("×" if c else "") for c in cells) + " |")
    out += ["", f"## Image quality (batch {b}): PSNR dB / SSIM against the original; PSNR against the same model's "
            "greedy output (100 = identical)", "",
            "| decoder | k | ε | ℓ | PSNR | SSIM | PSNR vs greedy | mean accepted |",
            "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["batch"] in (None, b) and r["k"] in (None, 1, max(args.ks)) and r["min_block"] in (None, 1):
            out.append(f"| {r['regime']} | {r['k'] or '–'} | {fmt(r['eps'], 0)} | {r['min_block'] or '–'} | "
                       f"{fmt(r['psnr'])} | {fmt(r['ssim'], 3)} | {fmt(r['psnr_vs_greedy'])} | "
                       f"{fmt(r['mean_accepted'])} |")
    mins = [r for r in records if r["batch"] == b and r["min_block"] not in (None, 1)]
    if mins:
        out += ["", f"## Minimum block size ℓ (with ε={fmt(args.eps, 0)}), batch {b}: mean accepted / PSNR / "
                "speedup", "", "| regime | k | ℓ | mean accepted | PSNR | PSNR vs greedy | speedup |",
                "|---|---|---|---|---|---|---|"]
        for r in mins:
            out.append(f"| {r['regime']} | {r['k']} | {r['min_block']} | {fmt(r['mean_accepted'])} | {fmt(r['psnr'])} "
                       f"| {fmt(r['psnr_vs_greedy'])} | {fmt(r['speedup'])}× |")
    if curve:
        out += ["", "## Learning curve (training loss, nats/pixel, mean over each span; dev loss on 64 dev images)", "",
                "| stage | step | train loss | dev loss |", "|---|---|---|---|"]
        out += [f"| {s} | {step} | {loss:.3f} | {fmt(ev, 3)} |" for s, step, loss, ev in curve]
    out += ["", "## Files", "", f"- `summary.json`: every record; `grid_*.png`: {k_grid}; `grid_lfw.png`: "
            "LFW faces from scikit-image (out of domain).", "", "## Data and machine", "",
            "```json", json.dumps({"data": data_info, "environment": env}, indent=1), "```", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/sr/x4", help="folder holding regular/ and finetune/ (from train.py)")
    ap.add_argument("--out", default="results/sr")
    ap.add_argument("--n", type=int, default=32, help="test images decoded at --batch")
    ap.add_argument("--n-batch1", type=int, default=8, help="test images decoded at batch 1 (0: skip batch 1)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 6, 8, 10])
    ap.add_argument("--eps", type=float, default=2.0)
    ap.add_argument("--min-blocks", type=int, nargs="*", default=[2, 3])
    ap.add_argument("--grid", type=int, default=8, help="test images in the PNG grids")
    ap.add_argument("--lfw", type=int, default=6, help="LFW faces in grid_lfw.png (0: none)")
    ap.add_argument("--device", default="cpu", help="decode on cpu or cuda")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="decode in this dtype, greedy and blockwise alike (bfloat16 decoding is batch-invariant, "
                    "so exact stays exact; for these small models on the 2-core CPU it was slower than float32 in a "
                    "first, unquiet check)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                    help="which of the two models to decode (default both)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root, out_dir = Path(args.root), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = sr.load_fashion_mnist()
    env = environment()
    env["dtype"] = args.dtype

    def log(msg):
        print(msg, flush=True)

    models = {}
    for key in args.models:
        path = root / key / "model.safetensors"
        if path.exists():
            model, meta = sr.load_sr(path, dtype=getattr(torch, args.dtype))
            models[key] = (model.to(args.device), meta)
        else:
            log(f"no {path}: its regimes are left out")
    if not models:
        raise SystemExit(f"no models under {root}: run recipes/sr/train.py first")
    factor = next(iter(models.values()))[1]["factor"]
    args.factor = factor
    highs = data.test[: args.n]
    lows = sr.downsample(highs, factor)
    cubic = sr.bicubic(lows, factor)
    records = [record("Bicubic", None, None, None, None, None, None, sr.psnr(cubic, highs), None, None,
                      sr.ssim(cubic, highs), len(highs))]
    k_top, eps = max(args.ks), args.eps
    for key, (model, meta) in models.items():
        if model.heads_cfg.num_heads < k_top:
            raise SystemExit(f"{key} model has k={model.heads_cfg.num_heads} heads; --ks asks for up to {k_top}")
        log(f"{key}: {meta}")
        recs, images = run_model(model, meta, highs, args.batch, args.ks, eps, args.min_blocks, MODELS[key], log)
        records += recs
        g = args.grid
        sr.write_grid(out_dir / f"grid_{key}.png", {
            "low-res": lows[:g], "bicubic": cubic[:g], "greedy": images["greedy"][:g],
            f"exact k={k_top}": images[(k_top, None, 1)][:g], f"eps={eps:g} k={k_top}": images[(k_top, eps, 1)][:g],
            "original": highs[:g]})
        if args.n_batch1:
            recs, _ = run_model(model, meta, highs[: args.n_batch1], 1, args.ks, eps, args.min_blocks, MODELS[key],
                                log)
            records += recs
    if args.lfw:
        key = "finetune" if "finetune" in models else "regular"
        model, meta = models[key]
        layout = meta.get("source", "raster")
        faces = sr.lfw_faces(args.lfw)
        face_lows = sr.downsample(faces, factor)
        greedy_faces = sr.upsample(model, face_lows, factor, "greedy", batch_size=len(faces), layout=layout).images
        panels = {"low-res": face_lows, "bicubic": sr.bicubic(face_lows, factor), "greedy": greedy_faces}
        for name, accept in ((f"exact k={k_top}", Acceptance()), (f"eps={eps:g} k={k_top}",
                                                                   Acceptance("distance", eps=eps))):
            panels[name] = sr.upsample(model, face_lows, factor, "blockwise", k=k_top, accept=accept,
                                       batch_size=len(faces), layout=layout).images
        panels["original"] = faces
        sr.write_grid(out_dir / "grid_lfw.png", panels)
        log(f"LFW ({key} model): greedy PSNR {sr.psnr(panels['greedy'], faces):.2f}, bicubic "
            f"{sr.psnr(panels['bicubic'], faces):.2f}")
    (out_dir / "summary.json").write_text(json.dumps(records, indent=1) + "\n")
    grid_desc = ", ".join(f"grid_{k}.png ({MODELS[k][0]} / {MODELS[k][1]} model)" for k in models)
    md = markdown(records, args, training_info(root), learning_curve(root, 100), env, data.describe(), grid_desc)
    (out_dir / "summary.md").write_text(md)
    log(f"wrote {out_dir / 'summary.json'} ({len(records)} records), {out_dir / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
