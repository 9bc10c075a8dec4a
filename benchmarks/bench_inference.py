"""Prints ONNX Runtime forward time per face (CPU), at 1 and 2 threads, batch 1 and 8,
plus the model's size. Usage: python benchmarks/bench_inference.py [--model PATH]"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from model.inference import DEFAULT_MODEL
from model.onnx_metadata import ModelMetadata


def time_session(session: ort.InferenceSession, batch: np.ndarray, repeats: int) -> float:
    """Median seconds per call after a warm-up."""
    for _ in range(5):
        session.run(None, {"image": batch})
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"image": batch})
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()

    graph = onnx.load(str(args.model))
    params = sum(int(np.prod(init.dims)) for init in graph.graph.initializer)
    meta = ModelMetadata.from_properties({p.key: p.value for p in graph.metadata_props})
    print(f"model {args.model} ({args.model.stat().st_size / 1e6:.1f} MB, {params / 1e6:.2f} M stored weights (identical initialisers are stored once), "
          f"mesh {meta.num_vertices} vertices / {meta.num_faces} triangles, input {meta.input_size}px)")
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
        for batch_size in (1, 8):
            batch = rng.random((batch_size, 3, meta.input_size, meta.input_size), dtype=np.float32)
            seconds = time_session(session, batch, args.repeats)
            print(f"onnxruntime {ort.__version__} CPU threads={threads} batch={batch_size}: "
                  f"{seconds * 1e3 / batch_size:.2f} ms/face ({seconds * 1e3:.2f} ms/batch)")


if __name__ == "__main__":
    main()
