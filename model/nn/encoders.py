"""Image encoders: a shared convolutional trunk with identity, expression, pose and
appearance heads (trained from scratch; sized for a fast CPU forward pass)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """Trunk and head sizes. ``stage_widths[i]`` channels after stride-2 stage i."""

    image_size: int = 128
    stem_width: int = 24
    stage_widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: tuple[int, ...] = (1, 2, 3, 2)
    expansion: int = 3
    feature_width: int = 512
    identity_dim: int = 128
    expression_dim: int = 64
    albedo_dim: int = 64
    # The appearance heads (albedo, lighting) also read the crop's colours averaged over a
    # colour_grid x colour_grid grid (:class:`ColourSummary`): the trunk, trained for landmarks under
    # colour augmentation, keeps almost no colour, so from its features alone every face got the
    # same albedo. 0: trunk features only (the models before it).
    colour_grid: int = 0
    # The identity head reads a trunk tail of its own: a second copy of the trunk's last
    # identity_trunk_blocks blocks and its projection, fed by the shared blocks before them
    # (:class:`TrunkTail`). Recognition and landmarks then stop competing for the same features:
    # the identity branch can learn the person while the pose and expression heads keep the
    # landmark network's features. 0: the identity head reads the shared features (the models
    # before it).
    identity_trunk_blocks: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.identity_trunk_blocks <= sum(self.blocks_per_stage):
            raise ValueError(f"identity_trunk_blocks ({self.identity_trunk_blocks}) must be between 0 and the "
                             f"trunk's {sum(self.blocks_per_stage)} blocks")
        if len(self.stage_widths) != len(self.blocks_per_stage):
            raise ValueError(f"stage_widths {self.stage_widths} and blocks_per_stage {self.blocks_per_stage} "
                             "must have one entry per stage")
        stride = 2 ** (1 + len(self.stage_widths))  # the stem and every stage halve the side
        if self.image_size % stride:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of {stride} (the trunk's stride)")


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride 1 or 2) -> 1x1 project, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.block = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


def _trunk_layers(config: EncoderConfig) -> list[nn.Module]:
    """The stem's layers, then one :class:`InvertedResidual` per block."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, config.stem_width, 3, 2, 1, bias=False),
        nn.BatchNorm2d(config.stem_width),
        nn.ReLU6(inplace=True),
    ]
    in_ch = config.stem_width
    for width, blocks in zip(config.stage_widths, config.blocks_per_stage):
        for b in range(blocks):
            layers.append(InvertedResidual(in_ch, width, 2 if b == 0 else 1, config.expansion))
            in_ch = width
    return layers


def _projection(config: EncoderConfig) -> nn.Sequential:
    side = config.image_size // 2 ** (1 + len(config.stage_widths))
    return nn.Sequential(
        nn.Flatten(), nn.Linear(config.stage_widths[-1] * side * side, config.feature_width), nn.ReLU(inplace=True)
    )


class Trunk(nn.Module):
    """(B, 3, S, S) normalised image -> (B, feature_width) spatially aware features.

    The last feature map (S / 32 on a side with four stages) is flattened rather than pooled so the heads keep
    where things are in the crop, which pose and landmarks need.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.features = nn.Sequential(*_trunk_layers(config))
        self.project = _projection(config)

    def split(self, image: torch.Tensor, tail_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> (the feature map before the last ``tail_blocks`` blocks (B, C, h, w),
        the features (B, feature_width))."""
        cut = len(self.features) - tail_blocks
        shared = self.features[:cut](image)
        return shared, self.project(self.features[cut:](shared))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(image))


class TrunkTail(nn.Module):
    """A second copy of the trunk's last ``blocks`` blocks and its projection: (B, C, h, w) the
    shared trunk's feature map before those blocks -> (B, feature_width) features of its own
    (the identity head's, :attr:`EncoderConfig.identity_trunk_blocks`)."""

    def __init__(self, config: EncoderConfig, blocks: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*_trunk_layers(config)[-blocks:])
        self.project = _projection(config)

    def seed_from(self, trunk: Trunk) -> None:
        """Copy the shared trunk's last blocks and projection: the tail computes the shared features."""
        first = len(trunk.features) - len(self.features)
        with torch.no_grad():
            for index, own in enumerate(self.features):
                own.load_state_dict(trunk.features[first + index].state_dict())
            self.project.load_state_dict(trunk.project.state_dict())

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(shared))


class ColourSummary(nn.Module):
    """(B, 3, S, S) normalised image -> (B, width) added to the trunk's features for the appearance
    heads: the image averaged over a G x G grid (B, 3 G^2), through a two-layer MLP whose last layer
    starts at zero (a model gaining it answers as before until it trains)."""

    def __init__(self, grid: int, width: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(3 * grid * grid, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, width),
        )
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.mlp(image)


def _head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, in_dim // 2), nn.ReLU(inplace=True), nn.Linear(in_dim // 2, out_dim))


@dataclass
class EncodedFace:
    """First representation of a batch of faces.

    identity (B, Di), expression (B, De), pose (B, 10) = 6D rotation, translation (3), log
    scale; albedo (B, Da); lighting (B, 9, 3) spherical-harmonics coefficients.
    """

    identity: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    albedo: torch.Tensor
    lighting: torch.Tensor

    def blended(self, given: EncodedFace, weights: torch.Tensor) -> EncodedFace:
        """Each code moved toward ``given``'s: ``code + w * (given - code)``, with ``weights``
        (N, 5) one column per code (identity, expression, pose, albedo, lighting): 0 keeps this
        code, 1 takes the given one. ``given``'s codes and ``weights`` have N = 1 rows (broadcast
        over the batch) or B."""
        codes = (self.identity, self.expression, self.pose, self.albedo, self.lighting)
        targets = (given.identity, given.expression, given.pose, given.albedo, given.lighting)
        mixed = []
        for column, (code, target) in enumerate(zip(codes, targets)):
            weight = weights[:, column].reshape(-1, *([1] * (code.dim() - 1)))
            mixed.append(code + weight * (target - code))
        return EncodedFace(*mixed)


class FaceEncoder(nn.Module):
    """Shared trunk + identity, expression, pose and appearance heads."""

    POSE_DIM = 10

    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        self.trunk = Trunk(config)
        self.identity_trunk_blocks = config.identity_trunk_blocks
        self.identity_trunk = TrunkTail(config, config.identity_trunk_blocks) if config.identity_trunk_blocks else None
        width = config.feature_width
        self.identity_head = _head(width, config.identity_dim)
        self.expression_head = _head(width, config.expression_dim)
        self.pose_head = _head(width, self.POSE_DIM)
        self.albedo_head = _head(width, config.albedo_dim)
        self.lighting_head = _head(width, 27)
        self.colour_summary = ColourSummary(config.colour_grid, width) if config.colour_grid else None
        # Start at the identity rotation, centred, unit log-scale offset, ambient white light.
        pose_out, lighting_out = self.pose_head[-1], self.lighting_head[-1]
        assert isinstance(pose_out, nn.Linear) and isinstance(lighting_out, nn.Linear)
        for layer in (pose_out, lighting_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            pose_out.bias[:6] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
            lighting_out.bias.view(9, 3)[0] = 1.0

    def forward(self, image: torch.Tensor) -> EncodedFace:
        if self.identity_trunk is None:
            features = identity_features = self.trunk(image)
        else:
            shared, features = self.trunk.split(image, self.identity_trunk_blocks)
            identity_features = self.identity_trunk(shared)
        appearance = features if self.colour_summary is None else features + self.colour_summary(image)
        return EncodedFace(
            identity=self.identity_head(identity_features),
            expression=self.expression_head(features),
            pose=self.pose_head(features),
            albedo=self.albedo_head(appearance),
            lighting=self.lighting_head(appearance).view(-1, 9, 3),
        )
