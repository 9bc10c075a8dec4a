"""A face's codes (the encoder's first representation) read from the network, and codes given to
the network to decode instead of the image's own (see :mod:`model.onnx_contract`). Torch-free.

The codes live in the model's own learned spaces, not in a standard basis: they mean something
to the model (and the exact weights) that produced them, and are compared or mixed only with
codes of that model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.onnx_contract import CODE_OUTPUTS, GIVEN_CODE_INPUTS, GIVEN_WEIGHTS

CODE_NAMES = ("identity", "expression", "pose", "albedo", "lighting")  # GIVEN_CODE_INPUTS order


@dataclass(frozen=True, eq=False)
class FaceCodes:
    """The codes one face was decoded with: decoding them again gives the same face (a mirror-averaged
    face carries its unmirrored crop's codes and the averaged lighting, see
    :mod:`model.runtime.mirror_average`).

    identity (Di,), expression (De,), pose (10,) = 6D rotation, translation (3) crop NDC and log
    scale, albedo (Da,), lighting (9, 3) spherical-harmonics coefficients.
    """

    identity: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    albedo: np.ndarray
    lighting: np.ndarray

    @classmethod
    def from_outputs(cls, out: dict[str, np.ndarray], row: int, given: GivenCodes | None = None) -> FaceCodes:
        """Row ``row`` of a run's outputs: the image's codes (the code outputs), moved toward the
        codes ``given`` to that run as the graph moved them; ``lighting`` is the graph's output,
        already blended."""
        encoded = [out[name][row] for name in CODE_OUTPUTS]
        if given is not None:
            weights = given.weight_matrix()[0 if given.rows == 1 else row]
            for index, (code, weight) in enumerate(zip(given.codes()[: len(CODE_OUTPUTS)], weights)):
                if code is not None and weight != 0:
                    target = np.asarray(code[0 if len(code) == 1 else row], np.float32)
                    encoded[index] = encoded[index] + np.float32(weight) * (target - encoded[index])
        identity, expression, pose, albedo = encoded
        return cls(identity, expression, pose, albedo, out["lighting"][row])


@dataclass(frozen=True, eq=False)
class GivenCodes:
    """Codes for the network to decode instead of the image's: each (N, ...) or None (the image's).

    N = 1 (the same codes for every crop of a run) or N = the number of crops. ``weights`` (N, 5),
    one column per code in :data:`CODE_NAMES` order, says how far each crop's code moves toward the
    given one (0: the image's, 1: the given code, between: a blend); by default 1 where a code is
    given and 0 where not.
    """

    identity: np.ndarray | None = None  # (N, Di)
    expression: np.ndarray | None = None  # (N, De)
    pose: np.ndarray | None = None  # (N, 10)
    albedo: np.ndarray | None = None  # (N, Da)
    lighting: np.ndarray | None = None  # (N, 9, 3)
    weights: np.ndarray | None = None  # (N, 5)

    def __post_init__(self) -> None:
        rows = {len(code) for code in self.codes() if code is not None}
        if self.weights is not None:
            rows.add(len(self.weights))
        if len(rows - {1}) > 1:
            raise ValueError(f"given codes have different row counts {sorted(rows)}: each has 1 row or one per crop")

    def codes(self) -> tuple[np.ndarray | None, ...]:
        """The five codes in :data:`CODE_NAMES` order."""
        return tuple(getattr(self, name) for name in CODE_NAMES)

    @property
    def rows(self) -> int:
        """N: 1, or the number of crops these codes are for."""
        counts = [len(code) for code in (*self.codes(), self.weights) if code is not None]
        return max(counts, default=1)

    def weight_matrix(self) -> np.ndarray:
        """(N, 5) float32: ``weights``, or 1 where a code is given and 0 where not."""
        if self.weights is not None:
            return np.asarray(self.weights, np.float32)
        given = np.array([code is not None for code in self.codes()], np.float32)
        return np.tile(given, (self.rows, 1))

    def feeds(self, defaults: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        """The graph's optional inputs for a run of ``count`` crops: the given codes (N, ...), zeros
        in the shape of ``defaults`` (the inputs' default values, (1, ...) each) for codes not given."""
        if self.rows not in (1, count):
            raise ValueError(f"given codes for {self.rows} crops, the run has {count}")
        out = {}
        for name, code in zip(GIVEN_CODE_INPUTS, self.codes()):
            default = defaults[name]
            if code is None:
                out[name] = default
                continue
            code = np.asarray(code, np.float32)
            if code.shape[1:] != default.shape[1:]:
                raise ValueError(f"{name} is {code.shape[1:]} per crop, the model takes {default.shape[1:]}")
            out[name] = np.ascontiguousarray(code)
        out[GIVEN_WEIGHTS] = self.weight_matrix()
        return out

    @classmethod
    def stack(cls, parts: Sequence[tuple[int, GivenCodes | None]]) -> GivenCodes | None:
        """One GivenCodes for crops concatenated from several runs: ``parts`` are (crop count, that
        run's codes or None) in order; a run without codes gets weight 0 (its images' own codes).
        None when no run has codes."""
        if all(given is None for _, given in parts):
            return None
        codes: dict[str, np.ndarray | None] = {}
        for index, name in enumerate(CODE_NAMES):
            present = [given.codes()[index] for _, given in parts if given is not None]
            shapes = {code.shape[1:] for code in present if code is not None}
            if not shapes:
                codes[name] = None
                continue
            if len(shapes) > 1:
                raise ValueError(f"given {name} codes of different sizes {sorted(shapes)} in one run")
            (shape,) = shapes
            rows = [np.broadcast_to(np.asarray(given.codes()[index], np.float32), (count, *shape))
                    if given is not None and given.codes()[index] is not None else np.zeros((count, *shape), np.float32)
                    for count, given in parts]
            codes[name] = np.concatenate(rows)
        weights = np.concatenate([np.broadcast_to(given.weight_matrix(), (count, len(CODE_NAMES)))
                                  if given is not None else np.zeros((count, len(CODE_NAMES)), np.float32)
                                  for count, given in parts])
        return cls(**codes, weights=weights)
