"""Training configuration: one typed loader from TOML files (or nested dicts) to frozen dataclasses.

:func:`from_dict` builds any nested frozen dataclass from a dict, checking every key and value
against the dataclass's fields: unknown keys are errors named by their dotted path (``optim.stpes``),
missing keys take the field's default, TOML arrays become tuples, integers become floats where a
field is a float; checks that span fields run in the dataclasses' ``__post_init__``. Training configs
(:class:`TrainConfig`) and the model configs that checkpoints store (:mod:`training.checkpoint`)
load through it.

A TOML config may start with ``extends = "other.toml"`` (a path relative to the file): the file is
read over the one it extends, tables merged key by key and the extending file winning. Chains are
allowed (``other.toml`` may extend a third file); a cycle is an error. The staged recipes in
``training/configs/`` are written this way, each stage extending the one it resumes.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from model.nn.face_model import ModelConfig
from training.data.augment import AugmentConfig
from training.data.identity_sampling import IdentitySamplingConfig
from training.data.pose_sampling import SamplingConfig
from training.identity_losses import IdentityWeights
from training.losses import LossWeights

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
EXTENDS = "extends"  # the top-level TOML key naming the file a config extends


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay (:func:`training.trainer.lr_factor`)."""

    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02
    grad_clip: float = 5.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; loaded from a TOML file with the same sections.

    The network's input is the augmented crop, so ``model.encoder.image_size`` and
    ``augment.output_size`` must be equal (a config that sets one sets both).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    identity: IdentityWeights = field(default_factory=IdentityWeights)
    identity_sampling: IdentitySamplingConfig = field(default_factory=IdentitySamplingConfig)
    # A fine-tune starts from this checkpoint's weights (fresh optimiser) when the run has none yet.
    init_checkpoint: str = ""
    # With init_checkpoint: restart the identity branch, the encoder's identity head (fresh) and the
    # identity decoder (:meth:`VertexDecoder.restart`: same output at the start). The landmark-only
    # recipe left it collapsed: every ReLU of the decoder's second layer off, so no gradient reached
    # its weights, its output a constant for every face, and identity features barely varying.
    restart_identity_branch: bool = False
    # With init_checkpoint: seed the identity branch with the expression branch's shape instead
    # (training/identity_seeding.py): the neutral face starts as the photo's whole shape, the
    # expression branch adds about nothing, the canonical face stays as it was.
    seed_identity_from_expression: bool = False
    # Train only the parameters whose names start with one of these (empty: all). A fine-tune of
    # the identity branch keeps the trunk and the pose and expression heads, which carry the
    # landmark accuracy on turned faces, as they are.
    trainable: tuple[str, ...] = ()
    # Keep BatchNorm on its running statistics (a fine-tune on small CPU batches, or from weights
    # read back out of an exported graph, whose BatchNorms are folded into the convolutions).
    freeze_batchnorm: bool = False
    seed: int = 0
    workers: int = 2
    threads: int = 0  # torch CPU threads; 0 = torch's default
    checkpoint_every: int = 500
    log_every: int = 20
    val_samples: int = 512

    def __post_init__(self) -> None:
        if self.model.encoder.image_size != self.augment.output_size:
            raise ValueError(
                f"model.encoder.image_size ({self.model.encoder.image_size}) and augment.output_size "
                f"({self.augment.output_size}) differ: the network reads the augmented crop, so they must be equal"
            )

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """The config of the TOML file at ``path``, read over the files it extends."""
        return from_dict(cls, load_toml(path))


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """The dataclass ``cls`` built from ``data``, whose dotted key in the whole config is ``path``
    (for error messages). Raises ValueError on unknown or missing keys and on values of the wrong type."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config key {path} must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [_join(path, key) for key in data if key not in fields]
    if unknown:
        raise ValueError(f"unknown config key{'s' * (len(unknown) > 1)}: {', '.join(unknown)}")
    missing = [_join(path, name) for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing config key{'s' * (len(missing) > 1)}: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except ValueError as err:  # a check across fields, in __post_init__
        if not path:
            raise
        raise ValueError(f"{path}: {err}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict, merged over the chain of files it ``extends``."""
    return _load_toml(Path(path).resolve(), ())


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``override``: tables merge key by key, any other value is replaced."""
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return merged


def _load_toml(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path in chain:
        raise ValueError(f"config {EXTENDS} cycle: {' -> '.join(str(p) for p in (*chain, path))}")
    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as err:  # say which file of the chain
            raise ValueError(f"{path}: {err}") from None
    parent = data.pop(EXTENDS, None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ValueError(f"{path}: {EXTENDS} must be a path string, got {type(parent).__name__}")
    target = (path.parent / parent).resolve()
    if not target.is_file():
        raise FileNotFoundError(f"{path} extends {parent!r}, which does not exist ({target})")
    return merge(_load_toml(target, (*chain, path)), data)


def _convert(kind: Any, value: Any, path: str) -> Any:
    """``value`` as the field type ``kind``: a dataclass, tuple[X, ...], bool, int, float or str."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path)
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {path} must be an array, got {type(value).__name__}")
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        elif len(items) != len(value):
            raise ValueError(f"config key {path} must hold {len(items)} values, got {len(value)}")
        return tuple(_convert(item, v, f"{path}[{i}]") for i, (item, v) in enumerate(zip(items, value)))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind not in (bool, int, float, str):
        raise TypeError(f"config key {path}: fields of type {kind} are not supported")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"config key {path} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
