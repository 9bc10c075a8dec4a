"""Execution providers: what a device asks ONNX Runtime for, and what a session that did not get it means."""

from __future__ import annotations

import logging
import warnings

import onnxruntime as ort
import pytest

from model.runtime.detector import DEFAULT_DETECTOR
from model.runtime.sessions import (
    DeviceUnavailable,
    check_session_providers,
    execution_providers,
    session_options,
)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.fixture
def ort_offers_cuda(monkeypatch):
    """ONNX Runtime as onnxruntime-gpu on a machine without a usable GPU: it lists the CUDA provider,
    but sessions asked for it get the CPU (here: this CPU-only build, which cannot create it either)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


def test_cpu_asks_for_the_cpu_alone():
    assert execution_providers("cpu") == [CPU]


def test_cuda_on_a_build_without_cuda_fails_with_the_reason(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(DeviceUnavailable, match="onnxruntime-gpu"):
        execution_providers("cuda")
    assert execution_providers("auto") == [CPU]


def test_cuda_and_auto_ask_for_tuned_cuda_first_when_offered(ort_offers_cuda):
    for device in ("cuda", "auto"):
        providers = execution_providers(device)
        assert providers[0][0] == CUDA and providers[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"
        assert providers[-1] == CPU


def test_a_session_that_fell_back_to_the_cpu_is_refused_for_cuda_and_a_warning_for_auto(ort_offers_cuda, caplog):
    requested = execution_providers("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ONNX Runtime's own "not in available provider names"
        session = ort.InferenceSession(str(DEFAULT_DETECTOR), session_options(1), providers=requested)
    actual = session.get_providers()
    assert CUDA not in actual  # the silent fallback this guards against
    with pytest.raises(DeviceUnavailable, match=f"could not create {CUDA} for the detector.*FACERECON_DEVICE=cpu"):
        check_session_providers("cuda", requested, actual, "the detector")
    with caplog.at_level(logging.WARNING, logger="facerecon.runtime"):
        check_session_providers("auto", requested, actual, "the detector")
    (record,) = [r for r in caplog.records if r.name == "facerecon.runtime"]
    assert record.levelno == logging.WARNING and CUDA in record.getMessage() and CPU in record.getMessage()


def test_sessions_that_got_what_they_asked_for_pass_quietly(caplog):
    with caplog.at_level(logging.DEBUG, logger="facerecon.runtime"):
        check_session_providers("cuda", [(CUDA, {}), CPU], [CUDA, CPU])
        check_session_providers("cpu", [CPU], [CPU])
        check_session_providers("auto", [CPU], [CPU])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


SPINNING = "session.intra_op.allow_spinning"


def test_threads_spin_within_a_run_unless_told_not_to():
    assert session_options(2).get_session_config_entry(SPINNING) == "1"
    assert session_options(2, spinning=False).get_session_config_entry(SPINNING) == "0"
    for spinning in (True, False):  # never on past the end of a run: the cores go back to other work
        assert session_options(2, spinning=spinning).get_session_config_entry("session.force_spinning_stop") == "1"
