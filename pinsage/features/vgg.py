"""VGG16 visual embeddings (paper Section 4: the 4,096-d visual input of every pin).

* :class:`VGG16` is torchvision's ``vgg16`` (configuration "D", no batch norm) written in plain torch,
  with the same module layout, so its ``state_dict`` keys are exactly torchvision's
  (``features.0.weight`` ... ``features.28.bias``, ``classifier.0.weight`` ... ``classifier.6.bias``)
  and torchvision's published ImageNet weights file (``vgg16-397923af.pth``) loads into it as is.
  Channel widths are parameters (defaults = VGG16) so tests can build a narrow model with the same
  key names and layer indices.
* :func:`load_vgg16` reads a weights file from a local path only (``torch.load(weights_only=True)``,
  never a download), infers the widths from the tensor shapes and refuses anything else with a
  clear message.
* :func:`extract_visual` embeds the images of a catalogue: Pillow decode + resize (shorter side 256)
  + centre crop 224 on a thread pool, ImageNet normalisation on the device, batched forward passes
  in ``torch.inference_mode`` with channels-last tensors, on the GPU when there is one. Items
  without an image, and images that are missing or cannot be decoded, get a zero vector and
  ``has_image = 0``; those files are counted and reported, never fatal. An ``image_path`` that is
  absolute or resolves outside the dataset directory (``..``, symlinks) is refused with a
  :class:`~pinsage.data.dataset.DatasetError`.

Which activation: **fc6** by default (post-ReLU output of ``classifier.0``, 4,096-d), as the
PinSage paper describes its visual embeddings ("the 6-th fully connected layer of a classification
network using the VGG-16 architecture"). fc6 is also the more generic, less ImageNet-class-specific
of the two 4,096-d layers, which transfers better to similarity search, and it skips the 16.8M-weight
fc7 product. ``layer="fc7"`` is available.
"""

from __future__ import annotations

import collections
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pinsage.features.images import ImageReport, checked_image_path, decode, items_row_locator
from pinsage.util.io import sha256_file
from pinsage.util.resources import resolve_device

VGG16_CHANNELS = (64, 128, 256, 512, 512)  # output channels of the five conv blocks
VGG16_BLOCK_DEPTH = (2, 2, 3, 3, 3)  # convs per block (configuration "D")
VGG16_FC = 4096
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYERS = ("fc6", "fc7")
_HUB_HASH = re.compile(r"-([a-f0-9]{6,})\.", re.IGNORECASE)  # torch.hub naming: name-<sha256 prefix>.pth

Log = Callable[[str], None]


class VGG16(nn.Module):
    """torchvision ``vgg16`` layout: ``features`` (Sequential of conv/ReLU/max-pool, convs at
    0,2,5,7,10,12,14,17,19,21,24,26,28), ``avgpool`` (adaptive 7x7) and ``classifier``
    (Linear 0 -> ReLU 1 -> Dropout 2 -> Linear 3 -> ReLU 4 -> Dropout 5 -> Linear 6)."""

    def __init__(self, channels: Sequence[int] = VGG16_CHANNELS, fc_dim: int = VGG16_FC,
                 num_classes: int = 1000):
        super().__init__()
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f"VGG16 needs five positive block widths, got {tuple(channels)}")
        self.channels, self.fc_dim, self.num_classes = tuple(int(c) for c in channels), int(fc_dim), int(num_classes)
        layers: list[nn.Module] = []
        c_in = 3
        for c_out, depth in zip(self.channels, VGG16_BLOCK_DEPTH):
            for _ in range(depth):
                layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 7 * 7, self.fc_dim), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(self.fc_dim, self.fc_dim), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(self.fc_dim, self.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, num_classes) logits."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)  # (B, C, 7, 7) -> (B, C*49)
        return self.classifier(x)

    def embed(self, x: torch.Tensor, layer: str = "fc6") -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, fc_dim) post-ReLU fc6 or fc7 activations."""
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        x = torch.flatten(self.avgpool(self.features(x)), 1)  # (B, C*49)
        x = torch.relu(self.classifier[0](x))  # fc6 (dropout is the identity at inference)
        if layer == "fc7":
            x = torch.relu(self.classifier[3](x))
        return x


def conv_indices() -> list[int]:
    """Indices of the 13 convolutions inside ``features`` (torchvision's numbering)."""
    out, i = [], 0
    for depth in VGG16_BLOCK_DEPTH:
        for _ in range(depth):
            out.append(i)
            i += 2  # conv, ReLU
        i += 1  # max-pool
    return out


def expected_keys() -> list[str]:
    return ([f"features.{i}.{p}" for i in conv_indices() for p in ("weight", "bias")]
            + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")])


@dataclass
class LoadedVGG:
    model: VGG16
    path: str
    sha256: str


def load_vgg16(path: str | os.PathLike) -> LoadedVGG:
    """A VGG16 from a local torchvision-layout state-dict file (widths inferred from its shapes).

    Accepts a plain state dict (what torchvision publishes) or ``{"state_dict": ...}``, with or
    without a ``module.`` prefix. Raises FileNotFoundError / ValueError with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights file not found: {path} (give a local copy of "
                                "torchvision's vgg16 weights, e.g. vgg16-397923af.pth; nothing is downloaded)")
    digest = sha256_file(path)
    hub = _HUB_HASH.search(path.name)
    if hub and not digest.startswith(hub.group(1).lower()):
        raise ValueError(f"{path.name}: sha256 {digest[:16]}... does not match the hash prefix "
                         f"{hub.group(1)!r} in its name; the file is damaged or not the file it claims to be")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors of every kind: report, don't dump a traceback
        raise ValueError(f"{path}: cannot read as a torch state dict with weights_only=True "
                         f"(a plain state_dict saved by torch.save is expected): {exc}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (torchvision vgg16 layout)")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    want = expected_keys()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in set(want)]
    if missing or unexpected:
        hint = " (batch-norm keys: this is vgg16_bn, not vgg16)" if any("running_mean" in k for k in sd) else ""
        raise ValueError(f"{path}: not a torchvision vgg16 state dict{hint}; missing keys {missing[:4]}"
                         f"{'...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
                         f"{'...' if len(unexpected) > 4 else ''}")
    convs = conv_indices()
    starts = np.cumsum((0,) + VGG16_BLOCK_DEPTH[:-1])  # first conv of each block
    channels = tuple(int(sd[f"features.{convs[s]}.weight"].shape[0]) for s in starts)
    fc_dim, num_classes = int(sd["classifier.0.weight"].shape[0]), int(sd["classifier.6.weight"].shape[0])
    if sd["classifier.0.weight"].shape[1] != channels[-1] * 49:
        raise ValueError(f"{path}: classifier.0.weight has {sd['classifier.0.weight'].shape[1]} inputs; "
                         f"a VGG16 with {channels[-1]} last-block channels needs {channels[-1] * 49}")
    model = VGG16(channels, fc_dim, num_classes)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: tensor shapes do not form a VGG16: {exc}") from None
    return LoadedVGG(model.eval(), str(path), digest)


def preprocess_batch(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 ImageNet-normalised, channels-last, on ``device``."""
    x = torch.from_numpy(np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))  # (B, H, W, 3)
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC storage seen as NCHW = channels_last
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def extract_visual(model: VGG16, root: str | os.PathLike, image_paths: Sequence[str], *,
                   layer: str = "fc6", batch_size: int = 32, device: str = "auto", workers: int = 0,
                   log: Log = print, progress_every_s: float = 10.0) -> tuple[np.ndarray, np.ndarray, ImageReport]:
    """Embed every item's image.

    Args:
        image_paths: one per item, relative to ``root``; "" / None for an item without an image.
        workers: Pillow decode threads (0: one per CPU core, at most 8).
    Returns:
        (N, fc_dim) float32 features (zero rows where there is no usable image), (N,) int8
        has_image, and the counts of missing / corrupt files.
    Raises:
        DatasetError: an image_path that is absolute or leaves ``root`` (checked for every item
            before any image is read).
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
    root = Path(root).resolve()
    file, user_row = items_row_locator(root)
    todo: list[tuple[int, Path]] = []
    for i, rel in enumerate(image_paths):
        rel = "" if rel is None or (isinstance(rel, float) and np.isnan(rel)) else str(rel).strip()
        if rel:
            todo.append((i, checked_image_path(root, rel, i, file, user_row)))
    n = len(image_paths)
    out = np.zeros((n, model.fc_dim), dtype=np.float32)
    has_image = np.zeros(n, dtype=np.int8)
    report = ImageReport(with_path=len(todo))
    if not todo:
        return out, has_image, report

    dev = resolve_device(device)
    model = model.to(dev).eval().to(memory_format=torch.channels_last)
    workers = workers or min(8, os.cpu_count() or 1)
    batch_size = max(1, int(batch_size))
    t0 = last = time.perf_counter()
    done = 0
    log(f"visual: {len(todo)} images, VGG16 {layer} on {dev}, batch {batch_size}, {workers} decode threads")

    def note(kind: str, path: Path, why: str) -> None:
        setattr(report, kind, getattr(report, kind) + 1)
        if len(report.examples[kind]) < 5:
            rel = str(path.relative_to(root))
            report.examples[kind].append(rel if kind == "missing" else f"{rel}: {why[len('corrupt: '):]}")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pinsage-image") as pool, \
            torch.inference_mode():
        pending: collections.deque = collections.deque()
        it = iter(todo)
        ahead = 3 * batch_size  # bounded read-ahead: decoding overlaps the forward pass
        for item in it:
            pending.append((item[0], item[1], pool.submit(decode, item[1])))
            if len(pending) >= ahead:
                break
        while pending:
            rows, pixels = [], []
            while pending and len(rows) < batch_size:
                i, path, fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[0], nxt[1], pool.submit(decode, nxt[1])))
                px, why = fut.result()
                if px is None:
                    note("missing" if why == "missing" else "corrupt", path, why)
                    continue
                rows.append(i)
                pixels.append(px)
            done += len(rows)
            if rows:
                x = preprocess_batch(np.stack(pixels), dev)  # (B, 224, 224, 3) -> (B, 3, 224, 224)
                out[rows] = model.embed(x, layer).float().cpu().numpy()
                has_image[rows] = 1
            now = time.perf_counter()
            if now - last >= progress_every_s or not pending:
                last = now
                seen = done + report.missing + report.corrupt
                rate = done / max(now - t0, 1e-9)
                eta = (len(todo) - seen) / max(rate, 1e-9)
                log(f"visual: {seen}/{len(todo)} images ({seen / len(todo):.0%}), {rate:.1f} img/s, "
                    f"eta {eta:.0f}s, {report.missing} missing, {report.corrupt} corrupt")
    report.embedded = int(has_image.sum())
    if report.missing or report.corrupt:
        log(f"visual: {report.missing} missing and {report.corrupt} unreadable image files got zero "
            f"vectors and has_image = 0; e.g. {report.examples['missing'][:2] + report.examples['corrupt'][:2]}")
    return out, has_image, report
