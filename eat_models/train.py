"""The one training loop every defense shares.

``train(TrainConfig(...))`` loads the data, builds the members, draws class-balanced
batches for each member from the rows its defense assigns it, asks the defense for the
step's loss, and saves a checkpoint (safetensors weights + JSON config).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, make_dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import save_checkpoint
from .data import (
    SPLIT_KINDS,
    ClassBalancedBatchSampler,
    ImageDataset,
    PairBatchSampler,
    dataset_entry,
    dataset_names,
    load_dataset,
    stratified_slice,
)
from .defenses import DEFENSES, OPTION_GROUPS, Batch, build_defense
from .defenses.base import Options, option
from .ensemble import AveragedEmbedding
from .evaluate import clustering_metrics, embed, retrieval_metrics
from .losses import LOSSES, TRIPLET_MINERS, MetricLoss
from .modes import eval_mode
from .networks import NORMS, NetworkConfig, build_network, default_network_config
from .provenance import provenance
from .resume import (
    load_resume_point,
    resume_dir,
    rng_state,
    save_resume_point,
    set_rng_state,
)
from .weight_average import WeightAverage

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("onecycle", "constant")
SAMPLERS = ("class-balanced", "spc2")


@dataclass
class RunOptions(Options):
    """The fields of a training run common to every defense (data, loss, network,
    optimiser, schedule, run control)."""

    dataset: str = option(
        "dataset (eat_models.data registry): "
        + "; ".join(f"'{n}': {dataset_entry(n).summary}" for n in dataset_names()),
        default="fashion-mnist",
    )
    data_dir: str | None = option(
        "where the data is (the Fashion-MNIST IDX files, the image-folder root, or the "
        "paper dataset's root); recorded in the checkpoint, so eval/attack/audit find it; "
        "default: the dataset's default location ("
        + "; ".join(
            f"{n}: {dataset_entry(n).default_location}"
            for n in dataset_names()
            if not dataset_entry(n).needs_location
        )
        + ")",
        default=None,
    )
    download: bool = option(
        "allow downloading Fashion-MNIST into the torchvision cache if not found", default=False
    )
    split: str = option(
        "'standard' (60k/10k, all classes) or 'class-disjoint' (unseen test classes)",
        default="standard",
        choices=SPLIT_KINDS,
    )
    loss: str = option(
        "metric loss: 'proxy-anchor' (the paper's) or 'triplet' (margin 0.2, on the triplets "
        "--triplet-miner picks)",
        default="proxy-anchor",
        choices=LOSSES,
    )
    triplet_miner: str = option(
        "triplet loss only: the triplets of each batch it trains on: 'semihard' "
        "(pytorch-metric-learning's semi-hard miner) or 'random' (one random triplet per "
        "anchor, the mean over all of them; on --sampler spc2 batches one per pair: "
        "RobRank's spc2-random miner of its ptripletN loss)",
        default="semihard",
        choices=TRIPLET_MINERS,
    )
    defense: str = option(
        "training defense: vanilla (no defense), pgd-at (Madry AT on the metric loss), "
        "trades (clean loss + beta * embedding shift), est / act (RobRank's embedding-shifted "
        "and anti-collapse triplet), hm (hardness manipulation, Zhou & Patel 2022), "
        "at-ensemble (K independent PGD-AT members), "
        "eat (Ensemble Adversarial Training)",
        default="vanilla",
        choices=tuple(DEFENSES),
    )
    members: int | None = option(
        "number of ensemble members K; default: the defense's own (3 for at-ensemble and eat, "
        "1 otherwise; vanilla with K > 1 is a plain ensemble)",
        default=None,
        minimum=1,
    )
    epochs: int = option("passes over the training set", default=8, minimum=1)
    classes_per_batch: int = option(
        "P: classes in each batch (the class-balanced sampler)", default=10, minimum=2
    )
    samples_per_class: int = option(
        "M: images per class in each batch (batch = P×M; the class-balanced sampler)",
        default=16,
        minimum=2,
    )
    sampler: str = option(
        "how batches are drawn: 'class-balanced' (P classes × M images, one pass over the "
        "data per epoch) or 'spc2' (RobRank's SPC-2: --pairs-per-batch (anchor, random "
        "positive of its class) pairs, every row an anchor once per epoch, so an epoch sees "
        "twice the images; HM and ACT take one triplet per pair; RobRank trains 8 such "
        "epochs where it trains 16 of the other)",
        default="class-balanced",
        choices=SAMPLERS,
    )
    pairs_per_batch: int = option(
        "spc2 only: (anchor, positive) pairs in each batch (2× images; RobRank's batch 128)",
        default=128,
        minimum=1,
    )
    lr: float | None = option(
        "AdamW learning rate of the networks (proxies get ×100); default: the defense's own, "
        "1e-3, and for eat 1e-3 × K (its members take 1/K of a single model's steps, each on "
        "K batches; tuned in results/fashion-mnist/tuning-12k-v2)",
        default=None,
        minimum=0.0,
    )
    weight_decay: float = option("AdamW weight decay", default=1e-4, minimum=0.0)
    optimizer: str = option(
        "'adamw' (decoupled weight decay) or 'adam' (RobRank's; weight decay as L2)",
        default="adamw",
        choices=OPTIMIZERS,
    )
    schedule: str = option(
        "learning-rate schedule: 'onecycle' (warm-up then cosine decay) or 'constant' (RobRank's)",
        default="onecycle",
        choices=SCHEDULES,
    )
    arch: str = option(
        "network: 'small-cnn' (28×28), 'rc2f2' (RobRank's 28×28 network) or 'resnet18' "
        "(larger images)",
        default="small-cnn",
    )
    width: int = option(
        "base width: channels of the first conv of small-cnn or rc2f2 (rc2f2: 32 is RobRank's)",
        default=32,
        minimum=1,
    )
    embedding_dim: int = option("embedding size D", default=128, minimum=2)
    norm: str = option(
        "small-cnn's normalisation: 'batch' (BatchNorm after each conv) or 'none' (biased "
        "convs without it, as RobRank's rc2f2)",
        default="batch",
        choices=NORMS,
    )
    image_size: int = option(
        "side length images of an image folder are resized to", default=224, minimum=8
    )
    imagenet_weights: str | None = option(
        "resnet18 only: 'imagenet' (torchvision download) or a local "
        ".pth state dict; default random init",
        default=None,
    )
    max_train: int | None = option(
        "use a stratified slice of this many training images (smoke runs)", default=None, minimum=1
    )
    ema_decay: float = option(
        "average each member's weights along training (EMA with this decay, e.g. 0.99; "
        "0: off). The checkpoint then holds the averaged weights; the last raw weights go "
        "to OUT/raw",
        default=0.0,
        minimum=0.0,
    )
    workers: int = option(
        "image folders: worker processes decoding training images (0: the main process)",
        default=2,
        minimum=0,
    )
    val_images: int = option(
        "after each epoch, score R@1 and NMI of the model on a fixed stratified slice of this "
        "many test images into the history (0: off)",
        default=0,
        minimum=0,
    )
    resume: bool = option(
        "continue the run in --out from its last epoch's resume point (OUT/resume: weights, "
        "optimiser, schedule, RNG and defense state), as if it had never stopped; the other "
        "flags must be the ones the run started with",
        default=False,
    )
    stop_after: int | None = option(
        "train at most this many epochs in this invocation, then save a resume point and "
        "exit without the final checkpoint (continue with --resume)",
        default=None,
        minimum=1,
    )
    seed: int = option("random seed (data order, init); member k uses seed + k", default=0)
    threads: int = option("torch CPU threads", default=2, minimum=1)
    device: str = option(
        "where training runs: 'cpu' (default), 'cuda', 'cuda:N', or 'auto' (cuda when "
        "available); the checkpoint is always saved with CPU tensors",
        default="cpu",
    )
    out: str = option("output checkpoint directory", default="runs/model")

    def to_dict(self) -> dict:
        return asdict(self)


#: Every knob of a training run, one flat record (the JSON in every checkpoint; the CLI's
#: flags are made from its fields): the common :class:`RunOptions` and each registered
#: defense's options dataclass (:data:`~eat_models.defenses.OPTION_GROUPS`), so a new
#: defense brings its options without an edit here. Values are checked on creation.
TrainConfig = make_dataclass(
    "TrainConfig",
    [],
    bases=(RunOptions, *reversed(OPTION_GROUPS)),
    namespace={"__module__": __name__, "__doc__": RunOptions.__doc__},
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``'auto'`` → cuda if available else cpu; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine")
    return device


def network_config_for(config: TrainConfig, dataset: ImageDataset) -> NetworkConfig:
    return default_network_config(
        config.arch,
        channels=dataset.channels,
        image_size=dataset.image_size,
        width=config.width,
        embedding_dim=config.embedding_dim,
        imagenet_weights=config.imagenet_weights,
        norm=config.norm,
    )


class _RowBatches(torch.utils.data.Sampler):
    """A member sampler's batches as rows of the training set (this rank's share)."""

    def __init__(self, sampler: ClassBalancedBatchSampler, rows: np.ndarray, ctx) -> None:
        self.sampler, self.rows, self.ctx = sampler, rows, ctx

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for local in self.sampler:
            yield self.ctx.shard(self.rows[np.asarray(local)]).tolist()


class _MemoryBatches:
    """Batches of an in-memory dataset, gathered by indexing (re-iterable per epoch)."""

    def __init__(self, train_set: ImageDataset, labels: torch.Tensor, rows: _RowBatches):
        self.train_set, self.labels, self.rows = train_set, labels, rows

    def __iter__(self):
        for idx in self.rows:
            index = torch.as_tensor(idx, dtype=torch.long)
            yield self.train_set.batch(idx), self.labels[index]


def member_batches(
    train_set: ImageDataset,
    labels: torch.Tensor,
    sampler: ClassBalancedBatchSampler,
    rows: np.ndarray,
    ctx,
    workers: int = 0,
):
    """One member's ``(images [B, C, H, W], labels [B])`` per step, in sampler order.

    Images held in memory are gathered in one indexing operation; image files (a folder
    dataset) are decoded by a torch DataLoader with ``workers`` processes through the
    same pipeline as search (:mod:`eat_models.images`)."""
    row_batches = _RowBatches(sampler, rows, ctx)
    if train_set.in_memory:
        return _MemoryBatches(train_set, labels, row_batches)
    return torch.utils.data.DataLoader(
        train_set, batch_sampler=row_batches, num_workers=max(0, int(workers))
    )


def member_samplers(
    labels: np.ndarray,
    member_rows: list[np.ndarray],
    classes_per_batch: int,
    samples_per_class: int,
    seed: int,
    sampler: str = "class-balanced",
    pairs_per_batch: int = 128,
) -> list[ClassBalancedBatchSampler] | list[PairBatchSampler]:
    """One class-balanced sampler (or, with ``sampler='spc2'``, one SPC-2 pair sampler of
    ``pairs_per_batch`` pairs) per member over its own rows, all of one length.

    An epoch is one pass of the *ensemble* over the training set: member k passes over
    its own part once, so a step count of ``min_k |rows_k| // batch``. For a single
    model, or members that all sample every row, that is ``len(labels) // batch`` as for
    any model; for EAT's K disjoint parts it is 1/K of that, so an EAT epoch costs about
    one PGD-AT epoch of attack work (DESIGN.md §2 step 4).
    """
    labels = np.asarray(labels)
    if sampler == "spc2":
        steps = max(1, min(len(rows) for rows in member_rows) // pairs_per_batch)
        return [
            PairBatchSampler(labels[rows], pairs_per_batch, num_batches=steps, seed=seed + 1000 * k)
            for k, rows in enumerate(member_rows)
        ]
    if sampler != "class-balanced":
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    num_classes = len(np.unique(labels))
    p = min(classes_per_batch, num_classes)
    batch_size = p * samples_per_class
    steps = max(1, min(len(rows) for rows in member_rows) // batch_size)
    samplers = []
    for k, rows in enumerate(member_rows):
        # A member whose rows hold fewer than P classes (class-disjoint parts) takes more
        # images per class, so every member's batch has the same size.
        p_k = min(p, len(np.unique(labels[rows])))
        samplers.append(
            ClassBalancedBatchSampler(
                labels[rows], p_k, batch_size // p_k, num_batches=steps, seed=seed + 1000 * k
            )
        )
    return samplers


def build_optimiser(config: TrainConfig, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (weight decay as L2, RobRank's)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")


def build_schedule(config: TrainConfig, optimiser, groups: list[dict], total_steps: int):
    """One-cycle (10 % warm-up, cosine decay) or a constant learning rate."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimiser,
            max_lr=[g["lr"] for g in groups],
            total_steps=total_steps,
            # 10 % warm-up; torch divides by zero when that is exactly one step (10 steps)
            pct_start=0.1 if total_steps != 10 else 0.2,
        )
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimiser, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")


def _validation_set(config: TrainConfig) -> ImageDataset:
    """The fixed stratified slice of the test set that per-epoch validation scores."""
    _, test_set = load_dataset(
        config.dataset, config.split, config.data_dir, False, image_size=config.image_size
    )
    return stratified_slice(test_set, config.val_images, seed=0)


def validation_metrics(members: list[torch.nn.Module], dataset: ImageDataset, seed: int) -> dict:
    """``val_recall@1`` and ``val_nmi`` of the members' averaged embedding on ``dataset``
    (eval mode, restored afterwards; draws no random numbers from torch's RNG)."""
    net = members[0] if len(members) == 1 else AveragedEmbedding(members)
    with eval_mode(net):
        embeddings = embed(net, dataset)
    labels = np.asarray(dataset.labels)
    return {
        "val_recall@1": round(retrieval_metrics(embeddings, labels)["recall@1"], 4),
        "val_nmi": round(clustering_metrics(embeddings, labels, seed=seed)["nmi"], 4),
    }


def train(config: TrainConfig, progress: bool = True, max_steps: int | None = None) -> Path:
    """Train per ``config`` and save the checkpoint to ``config.out``; returns its path.

    ``max_steps`` stops after that many optimiser steps (the schedule stays the one of the
    full run): the benchmark times a few steps to give a new row equal training compute.
    """
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    ctx = distributed.context(config.device)
    if ctx.distributed and config.sampler == "spc2":
        raise ValueError(
            "--sampler spc2 does not run under torchrun yet: a rank's share of a batch "
            "(every world_size-th row) would split its (anchor, positive) pairs"
        )
    train_set, _ = load_dataset(
        config.dataset, config.split, config.data_dir, config.download, image_size=config.image_size
    )
    train_set = stratified_slice(train_set, config.max_train, config.seed)
    num_classes = len(np.unique(train_set.labels))
    defense = build_defense(config.defense, config)
    net_config = network_config_for(config, train_set)
    device = resolve_device(config.device)
    if ctx.distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)

    members, losses = [], []
    for k in range(defense.num_members):
        torch.manual_seed(config.seed + k)
        members.append(build_network(net_config).to(device))
        losses.append(MetricLoss.for_run(config, int(train_set.labels.max()) + 1).to(device))
    distributed.broadcast_parameters([*members, *losses], ctx)
    if ctx.distributed:  # the ranks' random starts differ (their shards do too)
        torch.manual_seed(config.seed + 7919 * ctx.rank)
    lr = defense.learning_rate
    groups = [{"params": [p for m in members for p in m.parameters()], "lr": lr}]
    for loss in losses:
        groups += loss.parameter_groups(lr)
    optimiser = build_optimiser(config, groups, lr)

    member_rows = defense.member_rows(train_set.labels)
    samplers = member_samplers(
        train_set.labels,
        member_rows,
        config.classes_per_batch,
        config.samples_per_class,
        config.seed,
        config.sampler,
        config.pairs_per_batch,
    )
    steps_per_epoch = len(samplers[0])
    total_steps = steps_per_epoch * config.epochs
    scheduler = build_schedule(config, optimiser, groups, total_steps)
    labels_tensor = torch.as_tensor(train_set.labels)
    average = WeightAverage(members, config.ema_decay) if config.ema_decay > 0 else None
    global_batch = samplers[0].batch_size  # per member, summed over the ranks
    pairs = config.sampler == "spc2"  # the defenses' triplets: one anchor per pair
    log.info(
        "training %s × %d on %d images (%d classes), %d steps%s",
        config.defense,
        len(members),
        len(train_set),
        num_classes,
        total_steps,
        f", rank {ctx.rank} of {ctx.world_size} (global batch {global_batch})"
        if ctx.distributed
        else "",
    )

    loaders = [
        member_batches(train_set, labels_tensor, sampler, rows, ctx, config.workers)
        for sampler, rows in zip(samplers, member_rows, strict=True)
    ]
    validation = _validation_set(config) if config.val_images > 0 else None
    history: list[dict] = []
    steps_done, first_epoch, wall_before = 0, 0, 0.0
    step_seconds: list[float] = []
    state = load_resume_point(config.out, config.to_dict()) if config.resume else None
    if config.resume and state is None:
        log.info("no resume point in %s: starting the run from epoch 1", config.out)
    if state is not None:
        first_epoch, steps_done = int(state["epoch"]), int(state["steps"])
        history, step_seconds = list(state["history"]), list(state["step_seconds"])
        wall_before = float(state["train_wall_s"])
        for net, weights in zip(members, state["members"], strict=True):
            net.load_state_dict(weights)
        for loss, weights in zip(losses, state["losses"], strict=True):
            loss.load_state_dict(weights)
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["schedule"])
        if average is not None:
            average.load_state_dict(state["average"])
        defense.load_state_dict(state["defense"])
        set_rng_state(state["rng"])
        log.info("resumed %s after epoch %d of %d", config.out, first_epoch, config.epochs)
    started = time.perf_counter()
    bar = tqdm(
        total=total_steps,
        initial=steps_done,
        desc=f"train {config.defense}",
        disable=not progress or not ctx.is_main,
        unit="step",
    )
    epochs_this_run = 0
    for epoch in range(first_epoch, config.epochs):
        if max_steps is not None and steps_done >= max_steps:
            break
        if config.stop_after is not None and epochs_this_run >= config.stop_after:
            break
        for s in samplers:
            s.set_epoch(epoch)
        for m in members:
            m.train()
        running: dict[str, float] = {}
        epoch_losses: list[float] = []
        for step_batches in zip(*loaders, strict=True):
            if max_steps is not None and steps_done >= max_steps:
                break
            steps_done += 1
            batches = [Batch(x.to(device), y.to(device), pairs) for x, y in step_batches]
            step_started = time.perf_counter()
            loss, logs = defense.training_loss(members, losses, batches)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients([p for g in groups for p in g["params"]], ctx)
            optimiser.step()
            scheduler.step()
            step_seconds.append(time.perf_counter() - step_started)
            if average is not None:
                average.update(members)
            epoch_losses.append(distributed.mean_over_ranks(loss.item(), ctx))
            for key, value in logs.items():
                running[key] = 0.9 * running.get(key, value) + 0.1 * value
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()} | {"epoch": epoch + 1})
        mean_loss = float(np.mean(epoch_losses)) if epoch_losses else None
        # the epoch's mean loss; a defense's own running "loss" scalar may not replace it
        record = {"epoch": epoch + 1, **running, "loss": mean_loss}
        if validation is not None:
            deployed_now = average.averaged if average is not None else members
            record.update(validation_metrics(deployed_now, validation, config.seed))
        record["wall_s"] = round(wall_before + time.perf_counter() - started, 2)
        history.append(record)
        epochs_this_run += 1
        last_epoch = epoch + 1 == config.epochs
        if ctx.is_main and not last_epoch and (max_steps is None or steps_done < max_steps):
            save_resume_point(
                config.out,
                {
                    "config": config.to_dict(),
                    "epoch": epoch + 1,
                    "steps": steps_done,
                    "history": history,
                    "step_seconds": step_seconds,
                    "train_wall_s": wall_before + time.perf_counter() - started,
                    "members": [m.state_dict() for m in members],
                    "losses": [loss.state_dict() for loss in losses],
                    "optimiser": optimiser.state_dict(),
                    "schedule": scheduler.state_dict(),
                    "average": average.state_dict() if average is not None else None,
                    "defense": defense.state_dict(),
                    "rng": rng_state(),
                },
            )
    bar.close()
    wall = wall_before + time.perf_counter() - started
    finished = len(history) >= config.epochs or (max_steps is not None and steps_done >= max_steps)
    if not finished:
        log.info(
            "stopped after epoch %d of %d; continue with --resume (resume point in %s/resume)",
            len(history),
            config.epochs,
            config.out,
        )
        distributed.barrier(ctx)
        return Path(config.out) / "resume"

    for m in members:
        m.eval()
        m.cpu()
    deployed = members
    if average is not None:
        deployed = [m.cpu() for m in average.averaged]
    meta = {
        "dataset": config.dataset,
        # where training found the data, so `eat eval`/`attack`/`audit` find it without flags
        "data_dir": str(Path(config.data_dir).resolve()) if config.data_dir else None,
        "split": config.split,
        "class_names": list(train_set.class_names),
        "train_classes": sorted(int(c) for c in np.unique(train_set.labels)),
    }
    train_record = {
        **config.to_dict(),
        "members": len(members),
        "train_wall_s": round(wall, 2),
        "history": history,
        "train_images": len(train_set),
        "steps": steps_done,
        "steps_per_epoch": steps_per_epoch,
        "learning_rate": lr,
        "step_seconds_median": round(float(np.median(step_seconds)), 5) if step_seconds else None,
        "weights": f"ema {config.ema_decay:g}" if average is not None else "last",
        "threads": config.threads,
        "device": str(device),
        "world_size": ctx.world_size,
        "global_batch_size": global_batch,
        "provenance": provenance(),
    }
    net_configs = [net_config] * len(members)
    out = Path(config.out)
    if ctx.is_main:  # rank 0 alone writes; the others wait until the checkpoint is there
        if average is not None:
            raw_record = {**train_record, "weights": "last (raw weights of an EMA run)"}
            save_checkpoint(Path(config.out) / "raw", members, net_configs, meta, raw_record)
        out = save_checkpoint(config.out, deployed, net_configs, meta, train_record)
        log.info("saved %s after %.1f s", out, wall)
        if resume_dir(config.out).is_dir():  # the run is complete: its resume point is spent
            shutil.rmtree(resume_dir(config.out))
    distributed.barrier(ctx)
    return out
