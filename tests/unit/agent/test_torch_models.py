"""The GPU-bound synthetic models: their size against published figures, the memory plan, and
the clear errors of a host without PyTorch or CUDA (this machine has no torch) or of a slice
too small (the simulator's A100 40GB 1g.5gb). The networks themselves run only on a GPU host:
benchmarks/bench_real_gpu.py and docs/benchmarks.md ("Real GPU")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils._host_runtime import HARNESS_MODULE
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _engine_store as store
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _torch_models as tm
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    ALL_MODELS,
    MODELS,
    check_combination,
    is_torch_model,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)

COLLECTIONS = Path(__file__).resolve().parents[3] / "collections"
RESNET = tm.TORCH_MODELS["synth-resnet50"]
BERT = tm.TORCH_MODELS["synth-bert-large"]


# ------------------------------------------------------------------------------ shapes
def test_resnet50_has_resnet50s_size() -> None:
    # torchvision's resnet50: 25,557,032 parameters, of which 53,120 are batch-norm scales and
    # shifts (2 x 26,560 channels). Folded into the convolutions, each channel keeps one bias.
    assert RESNET.parameters() == 25_557_032 - 53_120 + 26_560
    # torchvision's documentation gives 4.09 GFLOPS (multiply-accumulates) at 224x224
    assert abs(RESNET.macs_per_sample() / 4.09e9 - 1) < 0.005
    assert RESNET.outputs == 1000 and RESNET.input_elements() == 3 * 224 * 224


def test_bert_large_has_bert_larges_size() -> None:
    # Hugging Face's bert-large-uncased BertModel: 335,141,888 parameters, 1,049,600 of them in
    # the pooler, which a question-answering model replaces by a 1024 -> 2 layer.
    assert BERT.parameters() == 335_141_888 - 1_049_600 + 1024 * 2 + 2
    # per token and layer: q, k, v, out (4 x 1024^2), feed-forward (2 x 1024 x 4096),
    # attention (2 x 384 x 1024); 384 tokens, 24 layers, plus the 1024 -> 2 head
    per_layer = 384 * (4 * 1024**2 + 2 * 1024 * 4096) + 2 * 384 * 384 * 1024
    assert BERT.macs_per_sample() == 24 * per_layer + 384 * 2 * 1024
    assert BERT.outputs == 768


def test_gpu_models_are_synthetic_and_registered_beside_the_numpy_ones() -> None:
    assert set(ALL_MODELS) == set(MODELS) | {"synth-resnet50", "synth-bert-large"}
    assert not set(MODELS) & set(tm.TORCH_MODELS)
    for name, model in tm.TORCH_MODELS.items():
        assert name.startswith("synth-") and is_torch_model(model)
        assert check_combination(name, "Offline", "99") is model
        # their engines hold the recipe, not the weights
        assert model.tensor_shapes() == [] and model.weights() == {}
        described = json.loads(json.dumps(model.describe()))
        assert described["parameters"] == model.parameters()
        assert "CUDA" in described["needs"]
        # tighter for float32 than for float16
        assert model.tolerance_for("fp32") < model.tolerance_for("fp16") == model.tolerance
    assert not any(is_torch_model(model) for model in MODELS.values())


# ------------------------------------------------------------------------------ memory
def test_bert_large_does_not_fit_a_1g_5gb_slice_for_an_accuracy_run() -> None:
    # A100 40GB 1g.5gb: 4864 MiB, of which 90 % = 4377 MiB may be used. fp32 AccuracyOnly needs
    # the reserve (1536) + fp32 weights (334,094,338 x 4 B = 1275 MiB) + the float64 reference
    # weights (x 8 B = 2549 MiB, plus one sample's activations): more than 4377.
    with pytest.raises(tm.GpuModelError) as caught:
        tm.memory_plan(BERT, "fp32", "Offline", "AccuracyOnly", 4864, 1, False, "MIG-x (1g.5gb)")
    message = str(caught.value)
    for words in ("synth-bert-large", "does not fit MIG-x (1g.5gb)", "4377 MiB of its 4864 MiB"):
        assert words in message
    assert "weights 1275 MiB" in message and "the 99 accuracy target (fp16)" in message
    # the same run's performance test fits; so does the accuracy run on a 1g.10gb (9728 MiB)
    assert tm.memory_plan(BERT, "fp32", "Offline", "PerformanceOnly", 4864, 1, False).batch == 8
    assert tm.memory_plan(BERT, "fp32", "Offline", "AccuracyOnly", 9728, 1, False).batch == 8


def test_batch_grows_with_the_slice_and_is_bounded_by_its_memory() -> None:
    by_slices = {
        slices: tm.memory_plan(RESNET, "fp16", "Offline", "PerformanceOnly", 80000, slices, False)
        for slices in (1, 3, 7)
    }
    assert {s: p.batch for s, p in by_slices.items()} == {1: 64, 3: 192, 7: 448}
    # ResNet's largest activation is 256 x 56 x 56 values; the plan keeps 5 of them per sample:
    # 8,028,160 B in fp16. 1536 + 49 (weights) + 294 (1024 images) MiB stay fixed, so a
    # 3 GiB budget (3414 MiB of memory at 90 %) holds (3072 - 1879) MiB / 8,028,160 B = 155
    # samples, rounded down to a multiple of 8.
    tight = tm.memory_plan(RESNET, "fp16", "Offline", "PerformanceOnly", 3414, 7, False)
    assert tight.budget_mib == 3072 and tight.batch == 152
    assert tight.need_mib <= tight.budget_mib
    # SingleStream and MultiStream batches are LoadGen's, whatever the memory
    assert (
        tm.memory_plan(RESNET, "fp16", "SingleStream", "PerformanceOnly", 80000, 7, False).batch
        == 1
    )
    assert (
        tm.memory_plan(RESNET, "fp16", "MultiStream", "PerformanceOnly", 80000, 7, False).batch == 8
    )


def test_a_shared_gpu_plans_for_a_seventh_of_its_memory() -> None:
    alone = tm.memory_plan(BERT, "fp16", "Offline", "PerformanceOnly", 143771, 7, False)
    shared = tm.memory_plan(BERT, "fp16", "Offline", "PerformanceOnly", 143771, 7, True)
    assert alone.budget_mib == int(143771 * 0.9) and shared.budget_mib == int(143771 * 0.9 / 7)
    with pytest.raises(tm.GpuModelError, match="a seventh of the shared GPU"):
        tm.memory_plan(BERT, "fp16", "Offline", "AccuracyOnly", 30000, 7, True)


# ------------------------------------------------------------------------------ where it runs
class FakeTarget:
    def __init__(self, kind: str, backend: str | None, memory: int | None = 81559) -> None:
        self.kind = kind
        self.backend = backend
        self.memory_total_mib = memory
        self.profile = {"cpu": "cpu", "gpu": "full-gpu"}.get(kind, "1g.10gb")
        self.shared_gpu = kind == "gpu"
        self.uuid = None if kind == "cpu" else "MIG-0000"
        self.visible_devices = self.uuid

    def describe(self) -> str:
        return "slice %s" % self.uuid


def no_torch() -> tuple[None, bool]:
    return None, False


def torch_without_cuda() -> tuple[str, bool]:
    return "2.11.0", False


def torch_with_cuda() -> tuple[str, bool]:
    return "2.11.0", True


@pytest.mark.parametrize(
    ("kind", "backend", "probe", "words"),
    [
        ("cpu", None, torch_with_cuda, "needs a CUDA device, and CUDA_VISIBLE_DEVICES names none"),
        ("mig", "sim", torch_with_cuda, "is a simulated slice with no CUDA device behind it"),
        ("mig", "nvml", no_torch, "needs PyTorch (torch) with CUDA, which is not installed"),
        ("mig", "nvml", torch_without_cuda, "torch 2.11.0 is installed for"),
    ],
)
def test_no_torch_or_no_cuda_is_a_clear_error_without_fallback(
    kind: str, backend: str, probe: Any, words: str
) -> None:
    with pytest.raises(tm.GpuModelError) as caught:
        tm.plan_run(
            BERT, "auto", FakeTarget(kind, backend), "Offline", "PerformanceOnly", "fp16", probe
        )
    message = str(caught.value)
    assert message.startswith("synth-bert-large needs") and words in message
    assert "--compute torch-cpu runs it on the CPU instead" in message
    with pytest.raises(tm.GpuModelError):  # --compute torch demands the same
        tm.plan_run(
            BERT, "torch", FakeTarget(kind, backend), "Offline", "PerformanceOnly", "fp16", probe
        )


def test_cpu_fallback_only_when_asked_for() -> None:
    target = FakeTarget("cpu", None)
    plan = tm.plan_run(
        RESNET, "torch-cpu", target, "Offline", "PerformanceOnly", "fp16", torch_without_cuda
    )
    assert (plan.device, plan.precision, plan.batch, plan.memory) == ("cpu", "fp32", 4, None)
    with pytest.raises(tm.GpuModelError, match=r"needs PyTorch \(torch\) even on the CPU"):
        tm.plan_run(RESNET, "torch-cpu", target, "Offline", "PerformanceOnly", "fp16", no_torch)
    with pytest.raises(tm.GpuModelError, match="synth-resnet50 has no numpy implementation"):
        tm.plan_run(RESNET, "numpy", target, "Offline", "PerformanceOnly", "fp16", torch_with_cuda)


def test_a_real_slice_with_torch_and_cuda_gets_its_memory_plan() -> None:
    target = FakeTarget("mig", "nvml", 16384)  # an H200 1g.18gb
    plan = tm.plan_run(
        RESNET, "auto", target, "Offline", "PerformanceOnly", "fp16", torch_with_cuda
    )
    assert (plan.device, plan.precision, plan.batch) == ("cuda", "fp16", 64)
    assert plan.memory is not None and plan.memory.memory_mib == 16384


# ------------------------------------------------------------------------------ the harness
@pytest.fixture(scope="module")
def a100(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A simulated A100 40GB with a 1g.5gb slice; engines for the GPU models on it."""
    root = tmp_path_factory.mktemp("gpu-models")
    state = str(root / "nvml-sim.json")
    nvml = SimulatedNvml(state, "1xA100-SXM4-40GB")
    nvml.nvmlInit()
    gpu = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(gpu, pynvml.NVML_DEVICE_MIG_ENABLE)
    nvml.sim_reset_gpu(0)  # an A100 enables MIG at its next reset
    gi = nvml.nvmlDeviceCreateGpuInstance(gpu, 19)
    nvml.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    facts = read_host(nvml)
    nvml.nvmlShutdown()
    (device,) = [d["uuid"] for d in facts["mig_devices"]]
    return {"state": state, "device": device, "engines": str(root / "engines")}


def harness(
    args: list[str], host: dict[str, str], device: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(
        PYTHONPATH=str(COLLECTIONS), HETEROMIG_GPU_BACKEND="sim", HETEROMIG_SIM_STATE=host["state"]
    )
    if device:
        env["CUDA_VISIBLE_DEVICES"] = device
    return subprocess.run(
        [sys.executable, "-m", HARNESS_MODULE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_harness_builds_a_recipe_engine_and_refuses_to_run_without_cuda(
    a100: dict[str, str], tmp_path: Path
) -> None:
    built = harness(
        [
            "build-engine",
            "--model",
            "synth-bert-large",
            "--scenario",
            "Offline",
            "--accuracy-target",
            "99.9",
            "--engine-dir",
            a100["engines"],
            "--json",
        ],
        a100,
        a100["device"],
    )
    assert built.returncode == 0, built.stderr
    path = json.loads(built.stdout)["path"]
    header, payload = store.read_engine(path)
    assert payload == b"" and header["tensors"] == []
    assert header["inputs"]["model"]["config"] == [24, 1024, 16, 4096, 384, 30522, 512]
    run = [
        "run",
        "--model",
        "synth-bert-large",
        "--scenario",
        "Offline",
        "--accuracy-target",
        "99.9",
        "--engine-dir",
        a100["engines"],
    ]
    # PerformanceOnly fits the 1g.5gb; this simulated slice has no CUDA device behind it
    refused = harness([*run, "--log-dir", str(tmp_path / "perf")], a100, a100["device"])
    line = one_line_error(refused)
    assert "synth-bert-large needs PyTorch with a CUDA device" in line and a100["device"] in line
    # AccuracyOnly in float32 does not fit the slice: said before anything is loaded
    refused = harness(
        [*run, "--mode", "AccuracyOnly", "--log-dir", str(tmp_path / "acc")], a100, a100["device"]
    )
    line = one_line_error(refused)
    assert "synth-bert-large (fp32, Offline AccuracyOnly) does not fit" in line
    assert "of its 4864 MiB may be used" in line
    assert not (tmp_path / "acc" / "heteromig_harness.json").exists()


def test_harness_without_torch_names_the_model_and_the_fallback(
    a100: dict[str, str], tmp_path: Path
) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("this host has torch: the 'no torch' path is not reachable here")
    args = [
        "run",
        "--model",
        "synth-resnet50",
        "--scenario",
        "Offline",
        "--engine-dir",
        a100["engines"],
        "--log-dir",
        str(tmp_path / "cpu"),
    ]
    line = one_line_error(harness(args, a100, None))
    assert "synth-resnet50 needs a CUDA device, and CUDA_VISIBLE_DEVICES names none" in line
    line = one_line_error(harness([*args, "--compute", "torch-cpu"], a100, None))
    assert "synth-resnet50 needs PyTorch (torch) even on the CPU" in line
    line = one_line_error(harness([*args, "--compute", "numpy"], a100, None))
    assert "synth-resnet50 has no numpy implementation" in line
    listed = json.loads(harness(["models", "--json"], a100, None).stdout)
    assert {m["name"] for m in listed} >= {"synth-resnet50", "synth-bert-large"}


# ------------------------------------------------------------------------------ calibration
class FakeLoadGen:
    """The parts of mlperf_loadgen that calibrate_offline uses; records the settings."""

    class TestSettings:
        pass

    class LogSettings:
        def __init__(self) -> None:
            self.log_output = type("LogOutput", (), {})()

    class TestScenario:
        Offline = "Offline"

    class TestMode:
        PerformanceOnly = "PerformanceOnly"

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def StartTestWithLogSettings(self, sut: Any, qsl: Any, settings: Any, logs: Any) -> None:
        self.seen.append((sut, qsl, settings))
        Path(logs.log_output.outdir, "mlperf_log_summary.txt").write_text(
            "Samples per second: 12345.6\nResult is : VALID\n"
        )


@pytest.mark.parametrize(("batch_ms", "expected_ms"), [(0.1, 300), (33.0, 990)])
def test_offline_calibration_spans_thirty_batches(
    tmp_path: Path, batch_ms: float, expected_ms: int
) -> None:
    """A 300 ms calibration saw ten 33 ms batches of synth-resnet50 on the H200 and read 60-80 %
    of the rate (docs/benchmarks.md): the calibration lasts at least 30 batches."""
    from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _harness_sut as h

    lg = FakeLoadGen()
    warm = {"samples_per_second": 13600.0, "batch_latency_ns": int(batch_ms * 1e6)}
    assert h.calibrate_offline(lg, "sut", "qsl", warm, 300, str(tmp_path)) == 12345.6
    assert lg.seen[0][2].min_duration_ms == expected_ms
    assert list(tmp_path.iterdir()) == []  # its logs are removed
