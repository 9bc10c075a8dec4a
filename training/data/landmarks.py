"""Dense face labelling with MediaPipe FaceMesh (468 points), used to label training photos.

``mediapipe==0.10.14`` carries its face detection and landmark models inside the wheel, so
this runs offline.
"""

from __future__ import annotations

import numpy as np


class MediaPipeLabeler:
    """Labels the most prominent face of an RGB photo with MediaPipe's 468 dense landmarks.

    Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, min_detection_confidence: float = 0.5) -> None:
        from mediapipe.python.solutions.face_mesh import FaceMesh

        self._mesh = FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
        )

    def __enter__(self) -> MediaPipeLabeler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._mesh.close()

    def label(self, image: np.ndarray) -> np.ndarray | None:
        """image (H, W, 3) uint8 RGB -> (468, 3) float32 landmarks in pixels, or None.

        x to the right, y down, z in the same pixel scale with smaller z nearer the camera
        (MediaPipe's convention, relative depth only).
        """
        height, width = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)
        out *= np.array([width, height, width], dtype=np.float32)
        return out
