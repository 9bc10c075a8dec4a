"""Large-pose data engine: turned faces synthesised from prepared, mostly frontal photos.

``facerecon synthesize --data DATA --out DATA_POSED`` reads the shards of ``facerecon prepare``
and, for each stored face crop:

1. reconstructs the face with the current model from the trainer's own validation crop (the
   network's size at margin 1.3 around the 68-point box of the stored labels) and moves the
   mesh into the stored crop, its base vertices pinned in x, y to the stored MediaPipe labels
   (the labels training trusts; the offsets spread over the dense mesh by midpoint subdivision)
   with the model's depth;
2. builds a scene of the whole stored crop: the face mesh textured with the photo (where the
   photo showed a part poorly, edge-on or hidden, and its mirror image well, with the mirror's
   detail over its own shading), and behind it a grid mesh over the whole crop whose depth is
   the face's back-most layer inside the face and outside recedes steeply from the nearest
   outline's depth to a plane behind the head (hair, ears, neck);
3. turns the scene about the head centre (midway between the mesh's points beside the ears):
   the face and a band around it turn rigidly, the turn fades to nothing further out, so the
   background stays where it was and the crop stays covered;
4. renders it with :mod:`model.nn.renderer`, the face over the surround, framed as prepare frames
   a face (the stored margin around the turned 68-point box); pixels from outside the source's
   photo get a random background as training gives prepared crops' padding, and surfaces the
   photo never showed (on neither side of the face) or that now face away are inpainted.

Labels are the turned mesh's 468 base vertices (MediaPipe's points), visible or hidden, with
depth in MediaPipe's convention (pixels, smaller nearer, relative). Shards have prepare's format
plus ``yaw`` (N,) degrees, the turned face's yaw; names read ``<source>_yaw+45``; the split of
each source is kept, so validation stays subject-disjoint. ``manifest.json`` holds the counts,
the yaw histogram (10 degree bins) and the time taken.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from model.conventions import ndc_to_pixels, points_box
from model.nn.decoders import CavityAttachment, SubdivisionUpsampler
from model.nn.geometry import euler_to_matrix, matrix_to_euler_degrees, vertex_normals
from model.nn.renderer import interpolate, rasterize
from model.runtime.crop import square_box
from model.topology import NUM_BASE_VERTICES, FaceTopology
from training.data.augment import AugmentConfig, crop_matrix, random_background
from training.data.prepare import STORED_MARGIN
from training.data.shards import decode_jpeg, encode_jpeg, read_shard, shard_path, shard_paths, write_shard
from training.tools.topology_builder import IBUG68_FROM_MEDIAPIPE

EAR_VERTICES = (234, 454)  # MediaPipe's face-oval points beside the ears: the head centre is midway
BACKING_DEPTH = 1.5  # pixels the grid lies behind the face mesh's back-most layer inside the face
VISIBILITY_TOLERANCE = 2.0  # pixels a vertex may lie behind the photo's visible surface and still count as seen
# A vertex takes its colour from its mirror image where the photo showed it poorly (the cosine
# between its normal and the view below POOR_VIEW, fully at POOR_VIEW - VIEW_BLEND or hidden)
# and its mirror image clearly better (by VIEW_BLEND more, fully at twice that).
POOR_VIEW = 0.35
VIEW_BLEND = 0.15
SHADING_SIGMA = 5.0  # pixels: coarser than this, a mirrored colour keeps the own side's shading
YAW_BIN_DEGREES = 10


@dataclass(frozen=True)
class SynthesisConfig:
    """Settings of :func:`synthesize_dataset`; lengths marked "box" are in 68-point face-box sides."""

    yaw_max: float = 90.0  # target yaws are spread evenly over [-yaw_max, yaw_max]
    per_image: int = 2  # turned views per source face, their target yaws stratified
    pitch_max: float = 20.0  # pitch added, uniform in [-pitch_max, pitch_max] degrees
    roll_max: float = 15.0
    max_turn: float = 90.0  # a target yaw further than this from the source's is taken on the other side
    limit: int | None = None  # a seeded random subset of this many source faces
    seed: int = 0
    grid_cells: int = 96  # the surround grid has (grid_cells + 1)^2 vertices over the stored crop
    recede: float = 0.5  # box: distance over which the surround recedes from the face outline's depth ...
    background: float = 0.7  # box: ... to a plane this far behind the head centre
    hold: float = 0.25  # box: the band around the face that turns rigidly with it
    fade: float = 0.4  # box: distance beyond the band over which the turn fades out
    inpaint_radius: float = 3.0
    batch_size: int = 16  # faces reconstructed per network call
    shard_size: int = 2048  # output images per shard


# Network crops (B, S, S, 3) uint8 -> posed vertices (B, V, 3) in the crop's NDC and rotations (B, 3, 3).
Reconstruct = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Reconstructor:
    """The model the engine reconstructs faces with: ``run``, its input size, and which model it is."""

    run: Reconstruct
    input_size: int
    description: str


def load_reconstructor(path: Path, topology: FaceTopology) -> Reconstructor:
    """The model at ``path``: an exported ``.onnx`` or a training checkpoint."""
    if path.suffix == ".onnx":
        from model.runtime.reconstructor import FaceReconstructor

        onnx = FaceReconstructor(path, topology=topology)

        def run_onnx(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = onnx.run(crops)
            return out["posed_vertices"], out["rotation"]

        steps = onnx.metadata.training_steps
        return Reconstructor(run_onnx, onnx.input_size, f"{path} ({steps} training steps)")
    from training.checkpoint import load_checkpoint

    model, data = load_checkpoint(path, topology)
    model.eval()

    def run_torch(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            result = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0)
        return result.posed_vertices.numpy(), result.rotation.numpy()

    return Reconstructor(run_torch, model.image_size, f"{path} ({int(data['steps'])} training steps)")


def network_crop(stored: np.ndarray, landmarks: np.ndarray, size: int,
                 margin: float = AugmentConfig.margin) -> tuple[np.ndarray, np.ndarray]:
    """The trainer's un-jittered crop of a stored crop (as :func:`training.data.augment.augment` with
    ``train=False``): image (size, size, 3) uint8 and its 2x3 map from stored-crop pixels."""
    points = landmarks[:, :2].astype(np.float64)
    matrix = crop_matrix(points, points[IBUG68_FROM_MEDIAPIPE], size, margin)
    image = cv2.warpAffine(stored, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return image, matrix


@dataclass
class PosedFace:
    """A face mesh in a stored crop: vertices (V, 3) x, y in crop pixels and depth in pixels
    (larger nearer, the renderer's screen space); rotation (3, 3) from the model frame to the
    camera frame (x right, y up, z toward the camera)."""

    vertices: np.ndarray
    rotation: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """(3,) the head centre the scene turns about."""
        return self.vertices[list(EAR_VERTICES)].mean(axis=0)

    @property
    def yaw(self) -> float:
        """Degrees, positive with the nose toward the image's right."""
        return float(matrix_to_euler_degrees(torch.as_tensor(self.rotation)[None])[0, 0])


def face_in_stored_crop(posed: np.ndarray, rotation: np.ndarray, matrix: np.ndarray, size: int,
                        labels: np.ndarray, spread: Callable[[torch.Tensor], torch.Tensor]) -> PosedFace:
    """The network's posed vertices (V, 3) in the NDC of its crop (cut by ``matrix``, 2x3, from
    the stored crop) -> :class:`PosedFace` in stored-crop pixels, with the base vertices moved
    onto the labels (468, 2+) in x, y and the other vertices moved along: ``spread`` carries base
    displacements (1, 468, C) to every vertex (1, V, C) (subdivision, then the cavities' rims)."""
    network = ndc_to_pixels(posed, size)
    linear = matrix[:, :2]
    xy = (network[:, :2] - matrix[:, 2]) @ np.linalg.inv(linear).T
    depth = network[:, 2] / math.sqrt(abs(np.linalg.det(linear)))
    offsets = torch.as_tensor(labels[:, :2] - xy[:NUM_BASE_VERTICES], dtype=torch.float32)
    xy = xy + spread(offsets[None])[0].numpy()
    return PosedFace(np.concatenate([xy, depth[:, None]], axis=1).astype(np.float32), rotation.astype(np.float32))


def _falloff(t: np.ndarray) -> np.ndarray:
    """1 at t <= 0, 0 at t >= 1, a half cosine between (flat at both ends)."""
    return 0.5 * (1.0 + np.cos(np.pi * np.clip(t, 0.0, 1.0)))


def _recede(t: np.ndarray) -> np.ndarray:
    """1 at t <= 0, 0 at t >= 1, (1 - t)^2 between: steep at the face outline, as a head's side is."""
    return np.square(1.0 - np.clip(t, 0.0, 1.0))


def _doubled_areas(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed doubled areas (F,) of triangles faces (F, 3) over points (N, 2+) in screen space
    (y down); negative = counter-clockwise on screen = facing the camera."""
    a, b, c = (points[faces[:, k], :2] for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _grid_faces(cells: int) -> np.ndarray:
    """Triangles (2 * cells^2, 3) of a (cells + 1)^2 row-major vertex grid, facing the camera."""
    row, col = np.divmod(np.arange(cells * cells), cells)
    corner = row * (cells + 1) + col
    right, below = corner + 1, corner + cells + 1
    return np.concatenate([np.stack([corner, below, right], 1), np.stack([right, below, below + 1], 1)])


@dataclass
class Scene:
    """The textured mesh of one stored crop, in its screen space (x, y pixels, depth larger nearer).

    points (N, 3), the face mesh's V vertices first, then the surround grid; faces (F, 3), the
    face mesh's ``face_triangles`` first; turn (N,) the share of the head's turn each point
    follows; uv (N, 2) the stored-crop pixel each point takes its colour from, mirror_uv (N, 2)
    that of its mirror image on the face and mirror_share (N,) how much of the colour's detail
    comes from there; unseen (N,) 1 where neither shows in the photo; texture (S, S, 3) uint8
    and its shading (S, S, 3) float32 (blurred over the face only); valid (4,) x0, y0, x1, y1
    the part of the texture that is photo (the rest is prepare's edge padding); face: the
    reconstruction the scene was built on.
    """

    points: np.ndarray
    faces: np.ndarray
    face_triangles: int
    turn: np.ndarray
    uv: np.ndarray
    mirror_uv: np.ndarray
    mirror_share: np.ndarray
    unseen: np.ndarray
    texture: np.ndarray
    shading: np.ndarray
    valid: np.ndarray
    face: PosedFace


def _face_texture_sources(face: PosedFace, depth: np.ndarray, mask: np.ndarray, topology: FaceTopology
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the face mesh takes its colours: mirror_share (V,), unseen (V,) and mirror_uv (V, 2).

    A vertex is seen when it lies no more than a little behind the photo's visible surface
    (depth (S, S) and mask (S, S) of the rasterised mesh); how well, by the cosine between its
    normal and the view direction. Where the photo showed it poorly (edge-on or hidden) and its
    mirror image (the face being near symmetric) clearly better, the colour blends over to the
    mirror's.
    """
    size = depth.shape[0]
    column, row = np.clip(np.floor(face.vertices[:, :2]).astype(int), 0, size - 1).T
    visible = ~mask[row, column] | (face.vertices[:, 2] >= depth[row, column] - VISIBILITY_TOLERANCE)
    upright = torch.as_tensor(face.vertices * np.array([1.0, -1.0, 1.0], np.float32))[None]  # y up
    facing = vertex_normals(upright, torch.as_tensor(topology.faces))[0, :, 2].numpy()
    quality = np.clip(facing, 0.0, 1.0) * visible
    mirror = topology.mirror
    poor = np.clip((POOR_VIEW - quality) / VIEW_BLEND, 0.0, 1.0)
    share = poor * np.clip((quality[mirror] - quality - VIEW_BLEND) / VIEW_BLEND, 0.0, 1.0)
    unseen = (1.0 - share) * ~visible + share * ~visible[mirror]
    return share.astype(np.float32), unseen.astype(np.float32), face.vertices[mirror, :2]


def _face_shading(texture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Texture (S, S, 3) uint8 blurred over the face pixels mask (S, S) only (so no background
    bleeds in at the outline), plainly blurred elsewhere: (S, S, 3) float32."""
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), SHADING_SIGMA)[..., None]
    inside = cv2.GaussianBlur(texture.astype(np.float32) * mask[..., None], (0, 0), SHADING_SIGMA)
    plain = cv2.GaussianBlur(texture.astype(np.float32), (0, 0), SHADING_SIGMA)
    return np.where(weight > 0.05, inside / np.maximum(weight, 0.05), plain)


def build_scene(texture: np.ndarray, valid: np.ndarray, face: PosedFace, topology: FaceTopology,
                config: SynthesisConfig) -> Scene:
    """Scene of a stored crop (S, S, 3) uint8, photo rectangle valid (4,), around the face reconstructed in it."""
    size = texture.shape[0]
    mesh_faces = torch.as_tensor(topology.faces)
    vertices = torch.as_tensor(face.vertices)[None]
    fragments = rasterize(vertices, mesh_faces, size, size)
    depth = interpolate(vertices[..., 2:], mesh_faces, fragments)[0, ..., 0].numpy()
    mask = fragments.mask[0].numpy()
    mirror_share, unseen, mirror_uv = _face_texture_sources(face, depth, mask, topology)
    # The grid runs behind the mesh's back-most layer, so it never covers a part of the face the
    # photo hides (as the far jaw behind a turned cheek) once the turn brings that part round.
    behind = vertices * torch.tensor([1.0, 1.0, -1.0])
    back_fragments = rasterize(behind, mesh_faces, size, size)
    back_depth = -interpolate(behind[..., 2:], mesh_faces, back_fragments)[0, ..., 0].numpy()

    # Depth and turn share of the surround, from the distance to the face and the nearest outline depth.
    distance, nearest = cv2.distanceTransformWithLabels((~mask).astype(np.uint8), cv2.DIST_L2, 5,
                                                        labelType=cv2.DIST_LABEL_PIXEL)
    outline_depth = back_depth.ravel()[np.flatnonzero(mask)[nearest - 1]]
    landmarks = face.vertices[IBUG68_FROM_MEDIAPIPE, :2]
    box_side = float((landmarks.max(axis=0) - landmarks.min(axis=0)).max())
    background = float(face.centre[2]) - config.background * box_side
    surround = background + (outline_depth - background) * _recede(distance / (config.recede * box_side))
    depth_map = np.where(mask, back_depth - BACKING_DEPTH, surround).astype(np.float32)
    turn_map = _falloff((distance - config.hold * box_side) / (config.fade * box_side)).astype(np.float32)

    ticks = np.linspace(0.0, size, config.grid_cells + 1, dtype=np.float32)
    grid_x, grid_y = np.meshgrid(ticks, ticks)
    grid_depth, grid_turn = (cv2.remap(m, grid_x - 0.5, grid_y - 0.5, cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE).ravel() for m in (depth_map, turn_map))
    grid_uv = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    count, grid_count = face.vertices.shape[0], len(grid_uv)
    return Scene(
        points=np.concatenate([face.vertices, np.concatenate([grid_uv, grid_depth[:, None]], axis=1)]),
        faces=np.concatenate([topology.faces, _grid_faces(config.grid_cells) + count]),
        face_triangles=len(topology.faces),
        turn=np.concatenate([np.ones(count, np.float32), grid_turn]),
        uv=np.concatenate([face.vertices[:, :2], grid_uv]),
        mirror_uv=np.concatenate([mirror_uv, grid_uv]),
        mirror_share=np.concatenate([mirror_share, np.zeros(grid_count, np.float32)]),
        unseen=np.concatenate([unseen, np.zeros(grid_count, np.float32)]),
        texture=texture,
        shading=_face_shading(texture, mask),
        valid=np.asarray(valid, np.float32),
        face=face,
    )


def _screen_rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Camera-frame rotations Rz(roll) Ry(yaw) Rx(pitch) of angles (N,) degrees, expressed in
    screen space (y down): (N, 3, 3)."""
    angles = [torch.as_tensor(np.radians(a), dtype=torch.float32) for a in (yaw, pitch, roll)]
    flip = np.array([1.0, -1.0, 1.0], np.float32)
    return euler_to_matrix(*angles).numpy() * flip[:, None] * flip[None, :]


@dataclass
class View:
    """One synthesised crop: image (S, S, 3) uint8; landmarks (468, 3) x, y pixels and depth in
    MediaPipe's convention (smaller nearer, mean 0); euler (3,) yaw, pitch, roll of the turned
    face in degrees; inpainted: share of the pixels inpainted."""

    image: np.ndarray
    landmarks: np.ndarray
    euler: np.ndarray
    inpainted: float


def _sample(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear colours (H, W, 3) float32 of texture (S, S, 3) at pixel coordinates uv (H, W, 2)."""
    return cv2.remap(texture, uv[..., 0] - 0.5, uv[..., 1] - 0.5, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def render_view(scene: Scene, yaw: float, pitch: float, roll: float, rng: np.random.Generator,
                config: SynthesisConfig) -> View:
    """The scene turned by camera-frame angles in degrees (positive yaw brings the nose to the
    image's right), framed as prepare frames a face.

    Pixels that do not come from the source's photo (its edge padding, or beyond its crop) get a
    random background, as training gives the padding of prepared crops; surfaces the photo did
    not show (on neither side of the face) or that now face away are inpainted.
    """
    size = scene.texture.shape[0]
    share = scene.turn
    rotations = _screen_rotations(share * yaw, share * pitch, share * roll)
    centre = scene.face.centre
    points = np.einsum("nij,nj->ni", rotations, scene.points - centre) + centre
    landmarks = points[:NUM_BASE_VERTICES]
    origin_x, origin_y, side = square_box(points_box(landmarks[IBUG68_FROM_MEDIAPIPE]), STORED_MARGIN)
    screen = ((points - np.array([origin_x, origin_y, 0.0])) * (size / side)).astype(np.float32)

    # The face is drawn over the surround: nothing around a head (hair, ears, background) lies in
    # front of its face, and the surround's guessed depth must not cut into a turned face.
    vertices = torch.as_tensor(screen)[None]
    per_vertex = np.concatenate([scene.uv, scene.mirror_uv, scene.mirror_share[:, None], scene.unseen[:, None]], axis=1)
    attributes = torch.as_tensor(per_vertex, dtype=torch.float32)[None]
    split = scene.face_triangles
    layers = []
    for first, stop in ((0, split), (split, len(scene.faces))):
        faces = torch.as_tensor(scene.faces[first:stop])
        fragments = rasterize(vertices, faces, size, size)
        index = fragments.face_index[0].numpy()
        layers.append((np.where(index >= 0, index + first, -1), interpolate(attributes, faces, fragments)[0].numpy()))
    (face_index, pixels), (surround_index, surround) = layers
    pixels = np.where((face_index >= 0)[..., None], pixels, surround)
    face_index = np.where(face_index >= 0, face_index, surround_index)
    uv, mirror_share = pixels[..., :2], pixels[..., 4:5]
    colour = _sample(scene.texture, uv)
    if mirror_share.any():
        # Detail from the mirror image, shading from the own side (lit differently, often).
        mirror_uv = pixels[..., 2:4]
        mirrored = (_sample(scene.texture, mirror_uv) - _sample(scene.shading, mirror_uv)
                    + _sample(scene.shading, uv))
        colour += (mirrored - colour) * mirror_share
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = scene.valid
    photo = (face_index >= 0) & (uv[..., 0] >= x0) & (uv[..., 0] <= x1) & (uv[..., 1] >= y0) & (uv[..., 1] <= y1)
    if not photo.all():
        image = np.where(photo[..., None], image, random_background(rng, size))
    facing = _doubled_areas(screen, scene.faces) < 0
    unseen = photo & ((pixels[..., 5] > 0.5) | ~facing[np.maximum(face_index, 0)])
    if unseen.any():
        unseen = cv2.dilate(unseen.astype(np.uint8), np.ones((3, 3), np.uint8))
        image = cv2.inpaint(image, unseen, config.inpaint_radius, cv2.INPAINT_TELEA)

    delta = euler_to_matrix(*(torch.tensor([math.radians(a)]) for a in (yaw, pitch, roll)))
    euler = matrix_to_euler_degrees(delta @ torch.as_tensor(scene.face.rotation)[None])[0].numpy()
    labels = screen[:NUM_BASE_VERTICES].copy()
    labels[:, 2] = labels[:, 2].mean() - labels[:, 2]
    return View(image=image, landmarks=labels, euler=euler, inpainted=float(np.mean(unseen)))


def plan_turns(source_yaw: float, count: int, rng: np.random.Generator,
               config: SynthesisConfig) -> np.ndarray:
    """Turns (count, 3) yaw, pitch, roll in degrees for ``count`` views of a face at ``source_yaw``.

    Target yaws are stratified over [-yaw_max, yaw_max] (one per equal slice, so the views of
    every face spread over both sides); a target more than ``max_turn`` from the source's yaw is
    mirrored to the other side. Pitch and roll are uniform in their ranges.
    """
    target = config.yaw_max * (-1.0 + 2.0 * (np.arange(count) + rng.random(count)) / count)
    target = np.where(np.abs(target - source_yaw) > config.max_turn, -target, target)
    pitch = rng.uniform(-config.pitch_max, config.pitch_max, count)
    roll = rng.uniform(-config.roll_max, config.roll_max, count)
    return np.stack([target - source_yaw, pitch, roll], axis=1)


class SourceFaces:
    """Every face of a prepared data folder (both splits), read shard by shard."""

    def __init__(self, root: Path) -> None:
        self.paths = shard_paths(root)
        if not self.paths:
            raise FileNotFoundError(f"no prepared shards in {root}: run `facerecon prepare` first")
        self.counts = []
        for path in self.paths:
            self.counts.append(len(read_shard(path, ["names"])["names"]))
        self.starts = np.cumsum([0] + self.counts)
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _shard(self, shard_id: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != shard_id:
            self._cached = shard_id, read_shard(self.paths[shard_id])
        return self._cached[1]

    def get(self, index: int) -> dict:
        """Face ``index``: image (S, S, 3) uint8, landmarks (468, 3), valid (4,), name, is_val."""
        shard_id = int(np.searchsorted(self.starts, index, side="right") - 1)
        data, row = self._shard(shard_id), index - int(self.starts[shard_id])
        return {
            "image": decode_jpeg(data["jpeg"], data["offsets"], row),
            "landmarks": data["landmarks"][row],
            "valid": data["valid"][row],
            "name": str(data["names"][row]),
            "is_val": bool(data["is_val"][row]),
        }


class SceneBuilder:
    """Reconstructs faces of stored crops in batches and builds their scenes."""

    def __init__(self, model: Reconstructor, topology: FaceTopology, config: SynthesisConfig) -> None:
        self.model = model
        self.topology = topology
        self.config = config
        upsampler, cavities = SubdivisionUpsampler(topology, coarse_level=0), CavityAttachment(topology)
        self.spread = lambda values: cavities.follow(upsampler(values))

    def scenes(self, sources: list[dict]) -> list[Scene]:
        """Scenes of the faces ``sources`` (as :meth:`SourceFaces.get` returns them), one network call."""
        size = self.model.input_size
        crops = [network_crop(s["image"], s["landmarks"], size) for s in sources]
        posed, rotation = self.model.run(np.stack([crop for crop, _ in crops]))
        out = []
        for i, source in enumerate(sources):
            face = face_in_stored_crop(posed[i], rotation[i], crops[i][1], size, source["landmarks"], self.spread)
            out.append(build_scene(source["image"], source["valid"], face, self.topology, self.config))
        return out


def view_name(source_name: str, yaw: float) -> str:
    return f"{Path(source_name).with_suffix('')}_yaw{yaw:+.0f}"


def encode_sample(view: View) -> dict[str, np.ndarray]:
    """A view as one sample of :func:`training.data.shards.write_shard` (the whole crop counts as photo)."""
    size = view.image.shape[0]
    return {"jpeg": encode_jpeg(view.image), "landmarks": view.landmarks.astype(np.float32),
            "valid": np.array([0, 0, size, size], np.float32)}


def yaw_histogram(yaw: np.ndarray) -> dict[str, int]:
    """Counts of yaws (N,) degrees in 10-degree bins from -90 to 90 (the ends closed)."""
    edges = np.arange(-90, 91, YAW_BIN_DEGREES)
    counts, _ = np.histogram(np.clip(yaw, -90, 90), bins=edges)
    return {f"{lo:+d}..{lo + YAW_BIN_DEGREES:+d}": int(c) for lo, c in zip(edges[:-1], counts)}


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def choose_sources(total: int, config: SynthesisConfig) -> list[int]:
    """Indices of the source faces: all, or a seeded random subset of ``config.limit``, in order."""
    if config.limit is None or config.limit >= total:
        return list(range(total))
    return sorted(np.random.default_rng(config.seed).choice(total, config.limit, replace=False).tolist())


def synthesize_dataset(data: Path, out: Path, model: Reconstructor, config: SynthesisConfig = SynthesisConfig(), *,
                       topology: FaceTopology | None = None, show_progress: bool = True) -> dict:
    """Write turned views of the faces in ``data`` as shards under ``out``; returns the manifest.

    Sources are cut into runs that fill one output shard each; a shard that exists is kept, so a
    stopped run resumes (every face draws from its own seeded generator, so the result is the same).
    """
    topology = topology or FaceTopology.load()
    sources = SourceFaces(data)
    chosen = choose_sources(len(sources), config)
    per_shard = max(1, config.shard_size // config.per_image)
    runs = [chosen[first : first + per_shard] for first in range(0, len(chosen), per_shard)]
    paths = [shard_path(out, shard_id) for shard_id in range(len(runs))]
    builder = SceneBuilder(model, topology, config)
    out.mkdir(parents=True, exist_ok=True)
    kept = sum(len(run) for run, path in zip(runs, paths) if path.is_file())
    progress = tqdm(total=len(chosen), desc="synthesize", initial=kept, unit="face", disable=not show_progress)
    started, done, made, yaws, inpainted = time.monotonic(), kept, 0, [], []
    for run, path in zip(runs, paths):
        if path.is_file():
            yaws.append(read_shard(path, ["yaw"])["yaw"])
            continue
        samples, names, val, shard_yaw = [], [], [], []
        for batch in _batches(run, config.batch_size):
            faces = [sources.get(i) for i in batch]
            for index, source, scene in zip(batch, faces, builder.scenes(faces)):
                rng = np.random.default_rng((config.seed, index))
                for yaw, pitch, roll in plan_turns(scene.face.yaw, config.per_image, rng, config):
                    view = render_view(scene, yaw, pitch, roll, rng, config)
                    samples.append(encode_sample(view))
                    names.append(view_name(source["name"], view.euler[0]))
                    val.append(source["is_val"])
                    shard_yaw.append(view.euler[0])
                    inpainted.append(view.inpainted)
            done += len(batch)
            progress.set_postfix_str(f"images {made + len(samples)}", refresh=False)
            progress.update(done - progress.n)
        write_shard(path, samples, names, val, extra={"yaw": np.array(shard_yaw, np.float32)})
        made += len(samples)
        yaws.append(np.array(shard_yaw, np.float32))
    progress.close()
    seconds = time.monotonic() - started
    all_yaws = np.concatenate(yaws) if yaws else np.zeros(0, np.float32)
    manifest = {
        "images": int(len(all_yaws)),
        "sources": len(chosen),
        "yaw_histogram": yaw_histogram(all_yaws),
        "images_made_this_run": made,
        "seconds": round(seconds, 1),
        "images_per_second": round(made / seconds, 3) if made else None,
        "mean_inpainted_share": round(float(np.mean(inpainted)), 4) if inpainted else None,
        "data": str(data),
        "model": model.description,
        "config": asdict(config),
        "stored_margin": STORED_MARGIN,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
