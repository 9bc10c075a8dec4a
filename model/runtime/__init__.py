"""The torch-free runtime: ONNX Runtime sessions, detection, crops, decoding, the pipeline.

ONNX Runtime's official builds record telemetry on disk (a SQLite store and a device id under
``~/.cache/Microsoft/DeveloperTools/.onnxruntime``, a ``.ses`` file in the temporary folder)
as soon as the library initialises, unless ``ORT_DISABLE_TELEMETRY=1`` is set before it is
first imported; the API switch (``disable_telemetry_events``) comes too late for those. Every
module here that imports it is imported through this package, so this is the place to set it.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
