"""open_backend: the one door to NVML, and the messages it gives when the door is shut."""

from __future__ import annotations

import builtins
import ctypes
import sys
from typing import Any

import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_backend import (
    BACKEND_ARGUMENT_SPEC,
    BACKENDS,
    BackendError,
    GpuBackend,
    nvml_error_text,
    open_backend,
    opened_backend,
)


def _has_nvml_library() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(BackendError) as caught:
        open_backend("cuda")
    assert str(caught.value) == "unknown GPU backend 'cuda': choose one of nvml, sim"


def test_argument_spec_offers_exactly_the_backends() -> None:
    assert BACKEND_ARGUMENT_SPEC["backend"]["choices"] == list(BACKENDS) == ["nvml", "sim"]
    assert BACKEND_ARGUMENT_SPEC["backend"]["default"] == "nvml", "no silent simulator default"


@pytest.mark.parametrize("sim_state", [None, ""])
def test_sim_without_state_file(sim_state: str | None) -> None:
    with pytest.raises(BackendError) as caught:
        open_backend("sim", sim_state, "1xH100")
    assert "backend 'sim' needs a simulator state file" in str(caught.value)
    assert "heteromig_sim_state" in str(caught.value)


@pytest.mark.skipif(_has_nvml_library(), reason="this host has an NVIDIA driver")
def test_nvml_without_driver_names_the_library() -> None:
    with pytest.raises(BackendError) as caught:
        open_backend("nvml")
    message = str(caught.value)
    assert "libnvidia-ml.so.1" in message
    assert "heteromig_gpu_backend: sim" in message, "the message must name the way out"
    assert "Traceback" not in message and "NVMLError" not in message
    assert isinstance(caught.value.__cause__, pynvml.NVMLError_LibraryNotFound)


def _fail_init(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def init() -> None:
        raise pynvml.NVMLError(code)

    monkeypatch.setattr(pynvml, "nvmlInit", init)


def test_nvml_with_driver_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_init(monkeypatch, pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(BackendError) as caught:
        open_backend("nvml")
    assert str(caught.value) == (
        "the NVIDIA kernel driver is not loaded on this host (NVML: Driver Not Loaded "
        "(NVML error 9)); load it (modprobe nvidia) or check 'nvidia-smi'"
    )


def test_nvml_other_init_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_init(monkeypatch, pynvml.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(BackendError) as caught:
        open_backend("nvml")
    assert str(caught.value) == (
        "NVML could not be initialised on this host: Insufficient Permissions (NVML error 4)"
    )


def test_nvml_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    backend = open_backend("nvml")
    assert (backend.name, backend.simulated, backend.nvml) == ("nvml", False, pynvml)
    with pytest.raises(BackendError, match="only a simulated host can be rebooted"):
        backend.reboot_simulated_host()
    backend.close()
    assert calls == ["init", "shutdown"]


@pytest.mark.parametrize("backend", ["nvml", "sim"])
def test_missing_pynvml_via_sys_modules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, backend: str
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    with pytest.raises(BackendError) as caught:
        open_backend(backend, str(tmp_path / "state.json"), "1xH100")
    message = str(caught.value)
    assert "nvidia-ml-py (module pynvml) is not installed" in message
    assert "%s -m pip install nvidia-ml-py" % sys.executable in message
    assert "heteromig.fleet.host_runtime" in message
    assert not (tmp_path / "state.json").exists()


def test_missing_pynvml_via_import(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pynvml":
            raise ModuleNotFoundError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(BackendError, match="nvidia-ml-py"):
        open_backend("nvml")


def test_sim_backend(tmp_path: Any) -> None:
    backend = open_backend("sim", str(tmp_path / "state.json"), "2xA30")
    assert (backend.name, backend.simulated) == ("sim", True)
    assert backend.nvml.nvmlDeviceGetCount() == 2
    backend.close()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        backend.nvml.nvmlDeviceGetCount()
    backend.close()  # closing twice must not raise


def test_sim_backend_configuration_errors_are_backend_errors(tmp_path: Any) -> None:
    with pytest.raises(BackendError, match="unknown simulated GPU model 'K80'"):
        open_backend("sim", str(tmp_path / "state.json"), "1xK80")


def test_real_reset_runs_nvidia_smi_through_the_given_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    seen: list[list[str]] = []

    def run_command(argv: list[str]) -> tuple[int, str, str]:
        seen.append(argv)
        return 0, "GPU 00000000:1B:00.0 was successfully reset.\n", ""

    backend = open_backend("nvml", run_command=run_command)
    backend.reset_gpu(3)
    assert seen == [["nvidia-smi", "--gpu-reset", "-i", "3"]]


def test_real_reset_failure_carries_nvidia_smi_output() -> None:
    out = "The following GPUs could not be reset:\n"
    err = "  GPU 00000000:1B:00.0: In use by another client\n"
    backend = GpuBackend("nvml", pynvml, run_command=lambda argv: (255, out, err))
    with pytest.raises(BackendError) as caught:
        backend.reset_gpu(0)
    assert str(caught.value) == "nvidia-smi could not reset GPU 0: %s" % (out + err).strip()


def test_real_reset_without_a_runner() -> None:
    with pytest.raises(BackendError, match=r"^cannot reset GPU 1: no command runner"):
        GpuBackend("nvml", pynvml).reset_gpu(1)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (pynvml.NVMLError(pynvml.NVML_ERROR_IN_USE), "In use by another client (NVML error 19)"),
        (pynvml.NVMLError_InsufficientResources(), "Insufficient Resources (NVML error 23)"),
        (pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED), "Not Supported (NVML error 3)"),
        (
            pynvml.NVMLError(pynvml.NVML_ERROR_RESET_REQUIRED),
            "GPU requires restart (NVML error 16)",
        ),
        (pynvml.NVMLError(77), "NVML error (NVML error 77)"),
        (ValueError("plain message"), "plain message"),
    ],
)
def test_nvml_error_text(error: Exception, text: str) -> None:
    assert nvml_error_text(error) == text


def test_nvml_error_text_uses_nvml_own_words() -> None:
    """Where pynvml knows the driver's string for a code (nvmlErrorString), use the same words."""
    known = dict(pynvml.NVMLError._errcode_to_string)
    differing = {}
    for code, words in known.items():
        ours = nvml_error_text(pynvml.NVMLError(code))
        if (
            ours != "%s (NVML error %d)" % (words, code)
            and ours != "NVML error (NVML error %d)" % code
        ):
            differing[code] = (words, ours)
    assert not differing, "wording differs from NVML's: %s" % differing


class Failed(Exception):
    """What the test's ``fail`` raises, as fail_json would exit."""


def _fail(message: str) -> None:
    raise Failed(message)


def _params(tmp_path: Any, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "sim",
        "sim_state": str(tmp_path / "state.json"),
        "sim_gpus": "1xH100-SXM5-80GB",
        **extra,
    }


def test_opened_backend_fails_with_the_open_message_and_runs_no_block(tmp_path: Any) -> None:
    ran = []
    nothing = {"backend": "sim", "sim_state": None, "sim_gpus": None}
    with pytest.raises(Failed) as caught, opened_backend(nothing, _fail, "x"):
        ran.append(True)
    assert "needs a simulator state file" in str(caught.value) and ran == []


def test_opened_backend_words_an_nvml_error_and_shuts_nvml_down(tmp_path: Any) -> None:
    from sim_faults import inject_fault

    params = _params(tmp_path)
    with opened_backend(params, _fail, "reading") as backend:
        assert backend.nvml.nvmlDeviceGetCount() == 1
    assert backend.nvml._initialised == 0  # shut down after the block
    inject_fault(params["sim_state"], "nvmlDeviceSetMigMode", pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(Failed) as caught, opened_backend(params, _fail, "switching MIG") as backend:
        handle = backend.nvml.nvmlDeviceGetHandleByIndex(0)
        backend.nvml.nvmlDeviceSetMigMode(handle, pynvml.NVML_DEVICE_MIG_ENABLE)
    # the words nvidia-smi uses for the code, not pynvml's library lookup
    assert str(caught.value) == "switching MIG failed: %s" % nvml_error_text(
        pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    )
    assert "GPU is lost" in str(caught.value)
    assert backend.nvml._initialised == 0


def test_opened_backend_passes_a_backend_error_of_the_block_on_unchanged(tmp_path: Any) -> None:
    with pytest.raises(Failed) as caught, opened_backend(_params(tmp_path), _fail, "x"):
        raise BackendError("the block's own words")
    assert str(caught.value) == "the block's own words"
