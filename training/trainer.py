"""The trainer: ``facerecon train --data DATA [--data MORE ...] --config CONFIG --out RUN``.

AdamW with linear warm-up and cosine decay, mixed precision on CUDA, checkpoints with resume
(``RUN/last.pt``), TensorBoard logs (``RUN/tb``), a progress line with the losses, and
DistributedDataParallel when started by ``torchrun`` (one process per GPU, any number of nodes).
Several data folders train as one set (e.g. prepared photos and ``facerecon synthesize``'s
turned faces); validation uses the first. ``[sampling] pose_balanced`` draws the training faces
so the yaw histogram is flat (see :mod:`training.data.pose_sampling`). The config is a
:class:`training.config.TrainConfig`, read from TOML.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from model.nn.encoders import EncodedFace
from model.nn.face_model import FaceReconstructionModel
from model.topology import NUM_BASE_VERTICES, FaceTopology
from training.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from training.config import OptimConfig, TrainConfig
from training.data.dataset import PreparedFaces
from training.data.identity_sampling import IdentityPairStream
from training.data.pose_sampling import WeightedStream, pose_balanced_weights
from training.identity_losses import IdentityLoss
from training.identity_seeding import seed_identity_from_expression
from training.losses import FaceLoss

SEED_PHOTOS = 64  # training photos the identity seeding averages over


def lr_factor(step: int, config: OptimConfig) -> float:
    """Linear warm-up to 1, then cosine decay to min_lr_ratio at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> _Distributed:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    info = _Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def set_training_mode(model: FaceReconstructionModel, freeze_batchnorm: bool) -> None:
    """Training mode, with the BatchNorms on their running statistics when ``freeze_batchnorm``."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()


def _first_rows(codes: EncodedFace, count: int) -> EncodedFace:
    return EncodedFace(**{f.name: getattr(codes, f.name)[:count] for f in dataclasses.fields(codes)})


def landmark_nme(model: FaceReconstructionModel, dataset: PreparedFaces, device: torch.device,
                 batch_size: int = 64) -> float:
    """Mean 468-landmark error on un-augmented crops, normalised by the crop side (percent)."""
    model.eval()
    errors = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for batch in loader:
            result = model(batch["image"].to(device))
            distance = torch.linalg.vector_norm(result.vertices_2d[:, :NUM_BASE_VERTICES].cpu() - batch["landmarks"],
                                                dim=-1)
            errors.append(distance.mean(dim=1) / model.image_size)
    model.train()
    return float(torch.cat(errors).mean() * 100)


def train(data: Path | Sequence[Path], config: TrainConfig, out: Path, *, topology: FaceTopology | None = None,
          max_samples: int | None = None) -> dict[str, float]:
    """Train (or resume) a run in ``out`` on one or more data folders; returns the final metrics."""
    roots = [data] if isinstance(data, (str, Path)) else list(data)
    if config.sampling.pose_balanced and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("pose-balanced sampling runs in a single process, not under torchrun")
    dist_info = _setup_distributed()
    device = torch.device(f"cuda:{dist_info.local_rank}" if torch.cuda.is_available() else "cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + dist_info.rank)
    topology = topology or FaceTopology.load()
    out.mkdir(parents=True, exist_ok=True)

    train_set = PreparedFaces(roots, "train", topology, config.augment, seed=config.seed, limit=max_samples)
    val_set = PreparedFaces(roots[0], "val", topology, config.augment, seed=config.seed, limit=config.val_samples)
    model = FaceReconstructionModel(topology, config.model).to(device)
    criterion = FaceLoss(topology, config.loss, model.image_size).to(device)
    identity_loss = IdentityLoss(topology, config.identity).to(device)
    pairs = config.identity_sampling.pairs_per_batch
    if pairs and dist_info.world_size > 1:
        raise ValueError("identity pairs (identity_sampling.pairs_per_batch) train in a single process")
    if config.trainable:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(config.trainable))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.optim.learning_rate,
                                  weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: lr_factor(step, config.optim))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # ``step`` counts this run's steps; checkpoints store the weights' total, init_steps (those of
    # the init checkpoint, for a fine-tune) plus step.
    step, init_steps, calibration = 0, 0, "none"
    last = out / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        load_model_state(model, state["state_dict"])
        calibration = state.get("landmark_calibration", calibration)
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        init_steps = int(state.get("init_steps", 0))
        step = int(state["steps"]) - init_steps
    else:
        if config.init_checkpoint:
            initial, init_state = load_checkpoint(config.init_checkpoint, topology)
            load_model_state(model, initial.state_dict())
            init_steps, calibration = int(init_state["steps"]), init_state.get("landmark_calibration", calibration)
            if config.restart_identity_branch:
                for layer in model.encoder.identity_head:
                    if isinstance(layer, torch.nn.Linear):
                        layer.reset_parameters()
                model.identity_decoder.offsets.restart()
            if config.seed_identity_from_expression:
                count = min(SEED_PHOTOS, len(train_set))
                photos = torch.stack([train_set[i]["image"] for i in range(count)]).to(device)
                generator = torch.Generator(device=device).manual_seed(config.seed)
                seed_identity_from_expression(model, topology, photos, generator)
        if dist_info.main:
            (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    net: torch.nn.Module = model
    if dist_info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)

    generator = torch.Generator().manual_seed(config.seed + step)
    sampler: Sampler[int]
    if dist_info.world_size > 1:
        sampler = DistributedSampler(train_set, seed=config.seed)
    elif pairs:
        weights = pose_balanced_weights(train_set.yaw, config.sampling) if config.sampling.pose_balanced \
            else np.ones(len(train_set))
        sampler = IdentityPairStream(train_set.person, weights, config.optim.batch_size, pairs,
                                     10**9 // config.optim.batch_size, generator, train_set.embedding,
                                     config.identity_sampling.look_alikes)
    elif config.sampling.pose_balanced:
        sampler = WeightedStream(pose_balanced_weights(train_set.yaw, config.sampling), 10**9, generator)
    else:
        sampler = RandomSampler(train_set, replacement=True, num_samples=10**9, generator=generator)
    loader = DataLoader(train_set, batch_size=config.optim.batch_size, sampler=sampler, num_workers=config.workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=config.workers > 0)
    writer = None
    if dist_info.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=step)
    progress = tqdm(total=config.optim.steps, desc="train", initial=step, unit="step", disable=not dist_info.main)

    def checkpoint() -> None:
        if not dist_info.main:
            return
        extra = {"optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict(), "train_config": dataclasses.asdict(config), "init_steps": init_steps}
        save_checkpoint(out / "last.tmp.pt", model, steps=init_steps + step, landmark_calibration=calibration,
                        extra=extra)
        (out / "last.tmp.pt").replace(last)

    set_training_mode(model, config.freeze_batchnorm)
    epoch, started = 0, time.monotonic()
    losses: list[float] = []
    while step < config.optim.steps:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= config.optim.steps:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if pairs:
                    codes = model.encode(batch["image"])
                    result = model.decode(codes)
                    # Each pair's photos rebuilt with their partner's identity features.
                    partner = torch.arange(2 * pairs, device=device) ^ 1
                    exchanged = model.decode(_first_rows(codes, 2 * pairs), identity=codes.identity[partner])
                else:
                    result = net(batch["image"])
            loss, terms = criterion(result, batch)
            exchanged_loss = criterion.landmark_loss(exchanged, batch["landmarks"][: 2 * pairs]) if pairs else None
            identity_terms = identity_loss(result, batch["person"], pairs, exchanged_loss,
                                           codes.identity if pairs else None, batch["embedding"])
            if identity_terms:
                loss = loss + sum(identity_terms.values())
                terms.update({name: float(value.detach()) for name, value in identity_terms.items()})
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimiser)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            if writer is not None and step % config.log_every == 0:
                writer.add_scalar("loss/total", loss.item(), step)
                for name, value in terms.items():
                    writer.add_scalar(f"loss/{name}", value, step)
                writer.add_scalar("lr", scheduler.get_last_lr()[0], step)
            progress.set_postfix_str(f"loss {loss.item():.4f} lmk {terms['landmarks']:.4f}"
                                     + (f" img {terms['region_image']:.4f}" if "region_image" in terms else ""),
                                     refresh=False)
            progress.update(1)
            if step % config.checkpoint_every == 0:
                checkpoint()
        epoch += 1
    checkpoint()
    metrics = {}
    progress.close()
    if dist_info.main:
        window = max(1, min(config.log_every, len(losses) // 2))
        metrics = {"val_nme468_percent": landmark_nme(model, val_set, device), "steps": float(init_steps + step),
                   "train_minutes": (time.monotonic() - started) / 60}
        if losses:  # this session's first and last losses (a resumed run reports only its own part)
            metrics["loss_start"] = sum(losses[:window]) / window
            metrics["loss_end"] = sum(losses[-window:]) / window
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        assert writer is not None  # made above on the main process
        writer.add_scalar("val/nme468_percent", metrics["val_nme468_percent"], step)
        writer.close()
    if dist_info.world_size > 1:
        dist.destroy_process_group()
    return metrics
