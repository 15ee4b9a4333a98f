"""VGG16 visual-feature throughput: image decode + preprocessing, forward pass, end to end.

    python bench/bench_vgg.py [--images 64 --batch 16 --device cpu --workers 0 --size 500x375]

Writes ``--images`` JPEGs (random-ish photos of ``--size``) to a temporary directory and times
(a) Pillow decode + resize + centre crop on the decode thread pool, (b) the VGG16 forward pass to
fc6 on ``--device`` (channels-last, and NCHW for comparison with ``--compare-layout``), and (c) the
whole :func:`pinsage.features.vgg.extract_visual` path the pipeline uses.

The VGG16 here is full size (138M parameters) with RANDOM weights, for timing only: the arithmetic
is the same as with ImageNet weights, and nothing it computes is used as a feature.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinsage.features.images import load_image  # noqa: E402
from pinsage.features.vgg import VGG16, extract_visual, preprocess_batch  # noqa: E402
from pinsage.util.resources import resolve_device  # noqa: E402


def make_images(directory: Path, n: int, size: tuple[int, int], seed: int) -> list[str]:
    """Smooth random colour fields plus noise: JPEG-compress like photos (not like pure noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    names = []
    for k in range(n):
        coarse = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 8, (h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
        name = f"img/{k:05d}.jpg"
        (directory / "img").mkdir(exist_ok=True)
        img.save(directory / name, quality=90)
        names.append(name)
    return names


def time_forward(model: VGG16, dev: torch.device, batch: np.ndarray, repeats: int, channels_last: bool) -> float:
    """images/s of preprocess_batch + model.embed over ``repeats`` batches (after one warm-up)."""
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with torch.inference_mode():
        def step():
            x = preprocess_batch(batch, dev)
            if not channels_last:
                x = x.contiguous()
            model.embed(x, "fc6").cpu()

        step()  # warm-up: allocator, cuDNN / oneDNN algorithm choice
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return repeats * len(batch) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--workers", type=int, default=0, help="decode threads (0: one per core, at most 8)")
    p.add_argument("--size", default="500x375", help="generated image size WxH")
    p.add_argument("--compare-layout", action="store_true", help="also time the forward pass in NCHW")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    dev = resolve_device(args.device)
    workers = args.workers or min(8, os.cpu_count() or 1)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory(prefix="bench_vgg_") as tmp:
        root = Path(tmp)
        names = make_images(root, args.images, size, args.seed)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pixels = list(pool.map(lambda n: load_image(root / n), names))
        decode = len(names) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        model = VGG16().eval()  # RANDOM weights: timing only, never features
        t_build = time.perf_counter() - t0
        model = model.to(dev)
        batch = np.stack(pixels[:args.batch])  # (B, 224, 224, 3)
        repeats = max(1, args.images // args.batch)
        fwd = time_forward(model, dev, batch, repeats, channels_last=True)
        fwd_nchw = time_forward(model, dev, batch, repeats, channels_last=False) if args.compare_layout else None

        t0 = time.perf_counter()
        feats, has, report = extract_visual(model, root, names, batch_size=args.batch, device=str(dev),
                                            workers=workers, log=lambda s: None)
        total = len(names) / (time.perf_counter() - t0)
        assert feats.shape == (len(names), 4096) and has.all() and report.embedded == len(names)

    gpu = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
    print(f"VGG16 (full size, RANDOM weights: timing only) fc6 on {dev}{gpu}; {args.images} JPEGs {size[0]}x{size[1]}, "
          f"batch {args.batch}, {workers} decode threads, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores; model built in {t_build:.1f}s")
    print("| stage | images/s |")
    print("|---|---:|")
    print(f"| decode + resize + centre crop (Pillow, {workers} threads) | {decode:,.1f} |")
    print(f"| forward to fc6, channels-last (normalisation included) | {fwd:,.1f} |")
    if fwd_nchw is not None:
        print(f"| forward to fc6, NCHW (for comparison) | {fwd_nchw:,.1f} |")
    print(f"| end to end: extract_visual (decode overlapped with forward) | {total:,.1f} |")


if __name__ == "__main__":
    main()
