"""The PCA-free face reconstruction network: encoders -> decoders -> pose -> projection."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from model.nn.decoders import (
    CavityAttachment,
    ExpressionDecoder,
    IdentityDecoder,
    SubdivisionUpsampler,
    VertexDecoder,
)
from model.nn.encoders import EncodedFace, EncoderConfig, FaceEncoder
from model.nn.geometry import matrix_to_euler_degrees, pose_transform, project_to_pixels, rotation_6d_to_matrix
from model.onnx_contract import RECONSTRUCTION_OUTPUTS
from model.topology import FaceTopology


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`FaceReconstructionModel`."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_hidden: int = 256
    shape_code_dim: int = 64
    coarse_level: int = 1  # decoders predict on this subdivision level (0 = the 468 base vertices)
    identity_offset_scale: float = 0.01  # metres per unit of decoder output
    expression_offset_scale: float = 0.01
    base_scale: float = 10.0  # NDC per metre at zero log-scale: a 0.15 m face spans 1.5 of the crop's 2
    input_mean: float = 0.5  # input images are RGB in [0, 1], normalised as (x - mean) / std
    input_std: float = 0.5


@dataclass
class FaceReconstruction:
    """Everything one forward pass predicts for a batch of B face crops of S x S pixels.

    Shapes: V mesh vertices, 68 iBUG landmarks. Metres in the model frame (+X subject's left,
    +Y up, +Z toward the camera); NDC in the crop (see :mod:`model.nn.geometry`); pixels in the crop.
    """

    neutral_vertices: torch.Tensor  # (B, V, 3) metres: identity only (V: surface + cavity vertices)
    expressive_vertices: torch.Tensor  # (B, V, 3) metres: identity + expression, frontal
    posed_vertices: torch.Tensor  # (B, V, 3) NDC
    vertices_2d: torch.Tensor  # (B, V, 2) crop pixels
    landmarks_2d: torch.Tensor  # (B, 68, 2) crop pixels: each landmark vertex plus its calibrated offset, posed
    landmarks_3d: torch.Tensor  # (B, 68, 3) crop pixels x, y and depth z in pixel units (larger nearer)
    rotation: torch.Tensor  # (B, 3, 3)
    euler_degrees: torch.Tensor  # (B, 3) yaw, pitch, roll
    translation: torch.Tensor  # (B, 3) NDC
    scale: torch.Tensor  # (B,) NDC per metre
    albedo: torch.Tensor  # (B, V, 3) in [0, 1]
    lighting: torch.Tensor  # (B, 9, 3) SH coefficients
    identity_offsets: torch.Tensor  # (B, Vs, 3) metres on the surface vertices, for regularisers
    expression_offsets: torch.Tensor  # (B, Vs, 3) metres on the surface vertices, for regularisers

    OUTPUT_NAMES = RECONSTRUCTION_OUTPUTS  # the exported graph's decoded outputs (model.onnx_contract)


class FaceReconstructionModel(nn.Module):
    """Image crops (B, 3, S, S) RGB in [0, 1] -> :class:`FaceReconstruction`."""

    # buffers
    faces: torch.Tensor  # (F, 3)
    landmark_vertices: torch.Tensor  # (68,)
    landmark_offsets: torch.Tensor  # (68, 3)

    def __init__(self, topology: FaceTopology, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        self.topology_version = topology.version
        enc = config.encoder
        template = torch.as_tensor(topology.vertices[: topology.num_surface_vertices], dtype=torch.float32)
        upsampler = SubdivisionUpsampler(topology, config.coarse_level)
        self.encoder = FaceEncoder(enc)
        self.identity_decoder = IdentityDecoder(
            enc.identity_dim, config.decoder_hidden, template, upsampler, config.identity_offset_scale
        )
        self.expression_decoder = ExpressionDecoder(
            enc.expression_dim, config.shape_code_dim, config.decoder_hidden, upsampler, config.expression_offset_scale,
        )
        self.albedo_decoder = VertexDecoder(enc.albedo_dim, config.decoder_hidden, upsampler)
        self.upsampler = upsampler
        self.cavities = CavityAttachment(topology)
        self.register_buffer("faces", torch.as_tensor(topology.faces), persistent=False)
        self.register_buffer("landmark_vertices", torch.as_tensor(topology.landmarks68), persistent=False)
        # (68, 3) metres in the model frame from each landmark's vertex to the landmark: zero until
        # `facerecon calibrate-landmarks` fits them (training.export.landmark_calibration) in the exported graph
        # and, with --checkpoint, in the training checkpoint. Saved with the weights (training.checkpoint).
        self.register_buffer("landmark_offsets", torch.zeros(len(topology.landmarks68), 3))

    @property
    def image_size(self) -> int:
        return self.config.encoder.image_size

    def forward(self, image: torch.Tensor) -> FaceReconstruction:
        return self.decode(self.encode(image))

    def encode(self, image: torch.Tensor) -> EncodedFace:
        """Crops (B, 3, S, S) RGB in [0, 1] -> the first representation (codes) of each face."""
        return self.encoder((image - self.config.input_mean) / self.config.input_std)

    def decode(self, codes: EncodedFace, identity: torch.Tensor | None = None) -> FaceReconstruction:
        """Codes -> reconstruction. ``identity`` (B, Di) replaces the codes' identity features:
        training's identity exchange rebuilds one photo of a person with another photo's identity.

        The three vertex decoders' coarse outputs are upsampled together, and the cavities
        attached to all three surfaces together (stacked on the batch axis): the same values as
        upsampling and attaching each alone, in a few wide operations instead of many narrow
        ones, which is most of the exported graph's decode time.
        """
        size = self.image_size
        identity_coarse = self.identity_decoder.coarse_offsets(codes.identity if identity is None else identity)
        expression_coarse = self.expression_decoder.coarse_offsets(codes.expression, identity_coarse)
        albedo_coarse = self.albedo_decoder.coarse(codes.albedo)
        upsampled = self.upsampler(torch.cat([identity_coarse, expression_coarse, albedo_coarse]))  # (3B, Vs, 3)
        identity_offsets, expression_offsets, albedo_logits = upsampled.chunk(3)
        neutral_surface = self.identity_decoder.template + identity_offsets
        neutral, expressive, albedo = self.cavities.attach(
            neutral_surface, neutral_surface + expression_offsets, torch.sigmoid(albedo_logits)
        )
        rotation = rotation_6d_to_matrix(codes.pose[:, :6])
        translation = codes.pose[:, 6:9]
        scale = self.config.base_scale * torch.exp(codes.pose[:, 9])
        posed = pose_transform(expressive, rotation, translation, scale)
        vertices_2d = project_to_pixels(posed, size)
        landmarks = expressive[:, self.landmark_vertices] + self.landmark_offsets
        landmarks_posed = pose_transform(landmarks, rotation, translation, scale)
        landmarks_2d = project_to_pixels(landmarks_posed, size)
        return FaceReconstruction(
            neutral_vertices=neutral,
            expressive_vertices=expressive,
            posed_vertices=posed,
            vertices_2d=vertices_2d,
            landmarks_2d=landmarks_2d,
            landmarks_3d=torch.cat([landmarks_2d, landmarks_posed[..., 2:] * (size / 2.0)], dim=-1),
            rotation=rotation,
            euler_degrees=matrix_to_euler_degrees(rotation),
            translation=translation,
            scale=scale,
            albedo=albedo,
            lighting=codes.lighting,
            identity_offsets=identity_offsets,
            expression_offsets=expression_offsets,
        )
