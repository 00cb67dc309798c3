"""Per-slice engines: content keys, the cache, corrupt and foreign engines, device lookup, the
embedded harness profile's build check (plus engine_build's slice groups)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pynvml
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _engine_spec as engine_spec,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import _engine_store as store
from ansible_collections.heteromig.fleet.plugins.module_utils.agent import (
    _synthetic_models as models,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._engine_spec import (
    EngineError,
    EngineSpec,
    SliceTarget,
    TargetError,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._gpu_inventory import read_host
from ansible_collections.heteromig.fleet.plugins.module_utils.nvml._nvml_sim import (
    SimulatedNvml,
)
from ansible_collections.heteromig.fleet.plugins.modules import engine_build

H100 = "H100-SXM5-80GB"


def make_layout(state_path: str) -> dict[str, Any]:
    """GPU 0 (H100): MIG with 1g.10gb x2, 2g.20gb, and a 3g.40gb split 1c+2c; GPU 1: no MIG."""
    nvml = SimulatedNvml(state_path, "2xH100-SXM5-80GB")
    nvml.nvmlInit()
    gpu = nvml.nvmlDeviceGetHandleByIndex(0)
    nvml.nvmlDeviceSetMigMode(gpu, pynvml.NVML_DEVICE_MIG_ENABLE)
    for profile_id, ci_profiles in ((19, [0]), (19, [0]), (14, [1]), (9, [1, 0])):
        gi = nvml.nvmlDeviceCreateGpuInstance(gpu, profile_id)
        for ci_profile in ci_profiles:
            nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile)
    host = read_host(nvml)
    nvml.nvmlShutdown()
    by_profile: dict[str, list[str]] = {}
    for device in host["mig_devices"]:
        by_profile.setdefault(device["profile"], []).append(device["uuid"])
    return {"host": host, "mig": by_profile, "gpu0": host["gpus"][0], "gpu1": host["gpus"][1]}


@pytest.fixture
def layout(state_path: str) -> dict[str, Any]:
    return make_layout(state_path)


def target(visible: str | None, state_path: str, allow: bool = False) -> SliceTarget:
    return engine_spec.resolve_target(visible, allow, backend="sim", sim_state=state_path)


# ------------------------------------------------------------------------------ device lookup
def test_mig_uuid_resolves_to_gpu_model_and_profile(
    layout: dict[str, Any], state_path: str
) -> None:
    uuid = layout["mig"]["1g.10gb"][1]
    found = target(uuid, state_path)
    assert (found.kind, found.gpu_model, found.profile, found.uuid) == (
        "mig",
        H100,
        "1g.10gb",
        uuid,
    )
    assert found.gpu_uuid == layout["gpu0"]["uuid"] and found.gpu_index == 0
    assert found.backend == "sim" and not found.shared_gpu and not found.warnings
    assert target(layout["mig"]["2g.20gb"][0], state_path).profile == "2g.20gb"
    assert target(layout["mig"]["1c.3g.40gb"][0], state_path).profile == "1c.3g.40gb"
    assert target(layout["mig"]["2c.3g.40gb"][0], state_path).profile == "2c.3g.40gb"


def test_pre_r470_mig_name_resolves(layout: dict[str, Any], state_path: str) -> None:
    device = next(d for d in layout["host"]["mig_devices"] if d["profile"] == "2c.3g.40gb")
    old = "MIG-%s/%d/%d" % (
        layout["gpu0"]["uuid"],
        device["gpu_instance_id"],
        device["compute_instance_id"],
    )
    assert target(old, state_path).uuid == device["uuid"]


def test_whole_gpu_needs_explicit_shared_mode(layout: dict[str, Any], state_path: str) -> None:
    uuid = layout["gpu1"]["uuid"]
    with pytest.raises(TargetError, match=r"names a whole GPU .*--allow-shared-gpu"):
        target(uuid, state_path)
    shared = target(uuid, state_path, allow=True)
    assert (shared.kind, shared.profile, shared.shared_gpu) == ("gpu", "full-gpu", True)
    assert "SHARED GPU, NO MIG ISOLATION" in engine_spec.shared_gpu_banner(shared)
    by_index = target("1", state_path, allow=True)
    assert by_index.uuid == uuid
    assert any("CUDA_DEVICE_ORDER" in w for w in by_index.warnings)


def test_mig_enabled_gpu_cannot_be_named_whole(layout: dict[str, Any], state_path: str) -> None:
    with pytest.raises(TargetError, match="has MIG enabled: name one of its MIG devices"):
        target(layout["gpu0"]["uuid"], state_path, allow=True)


def test_unknown_and_malformed_devices(layout: dict[str, Any], state_path: str) -> None:
    with pytest.raises(TargetError, match=r"knows no such device .*Not Found"):
        target("MIG-00000000-0000-0000-0000-000000000000", state_path)
    with pytest.raises(TargetError, match="neither a MIG UUID, a GPU UUID nor a GPU index"):
        target("fastest", state_path)
    with pytest.raises(TargetError, match="sim_state"):
        engine_spec.resolve_target("MIG-x", backend="sim", sim_state=None)


def test_no_device_is_the_cpu_and_several_take_the_first(
    layout: dict[str, Any], state_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(engine_spec.ENV_SIM_STATE, raising=False)
    assert target(None, state_path) == engine_spec.cpu_target()
    assert target("  ", state_path).profile == "cpu"
    first, second = layout["mig"]["1g.10gb"]
    found = target("%s,%s" % (first, second), state_path)
    assert found.uuid == first
    assert "names 2 devices" in found.warnings[0]


def test_backend_comes_from_the_environment(
    layout: dict[str, Any], state_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(engine_spec.ENV_BACKEND, "sim")
    monkeypatch.setenv(engine_spec.ENV_SIM_STATE, state_path)
    assert engine_spec.resolve_target(layout["mig"]["2g.20gb"][0]).profile == "2g.20gb"


# ------------------------------------------------------------------------------ keys and paths
def spec(**changes: str) -> EngineSpec:
    values = dict(
        model="synth-mlp-small",
        scenario="Offline",
        accuracy_target="99",
        gpu_model=H100,
        profile="1g.10gb",
    )
    values.update(changes)
    return EngineSpec(**values)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "synth-conv-1d"},
        {"scenario": "Server"},
        {"accuracy_target": "99.9"},
        {"gpu_model": "A100-SXM4-40GB"},
        {"profile": "3g.40gb"},
    ],
)
def test_every_input_changes_key_and_path(change: dict[str, str]) -> None:
    assert spec(**change).key() != spec().key()
    assert spec(**change).path("/e") != spec().path("/e")


def test_key_covers_model_definition_and_harness_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = spec().key()
    assert spec().key() == before  # stable
    monkeypatch.setattr(engine_spec, "HARNESS_VERSION", "9.9.9")
    assert spec().key() != before
    monkeypatch.undo()
    model = models.MODELS["synth-mlp-small"]
    monkeypatch.setitem(models.MODELS, model.name, dataclasses.replace(model, weight_seed=7))
    assert spec().key() != before


def test_engine_path_layout_and_safety() -> None:
    assert spec(profile="1g.10gb+me").path("/e") == (
        "/e/synth-mlp-small/Offline/99/H100-SXM5-80GB/1g.10gb+me.engine"
    )
    with pytest.raises(EngineError, match="cannot be used as part of an engine path"):
        engine_spec.engine_path("/e", "..", "Offline", "99", H100, "1g.10gb")
    assert engine_spec.gpu_model_key(None, "NVIDIA L40S") == "NVIDIA-L40S"
    assert engine_spec.gpu_model_key("H100-SXM5-80GB", "x") == "H100-SXM5-80GB"


@pytest.mark.parametrize(
    ("scenario", "profile", "expected"),
    [
        ("SingleStream", "7g.80gb", 1),
        ("MultiStream", "1g.10gb", 8),
        ("Offline", "1g.10gb", 64),
        ("Offline", "3g.40gb", 192),
        ("Server", "2g.20gb", 32),
        ("Offline", "1c.3g.40gb", 64),
        ("Offline", "full-gpu", 448),
        ("Server", "cpu", 16),
    ],
)
def test_batch_size_grows_with_compute_slices(scenario: str, profile: str, expected: int) -> None:
    assert engine_spec.batch_size(scenario, profile) == expected


# ------------------------------------------------------------------------------ the cache
def test_second_build_changes_nothing(tmp_path: Path) -> None:
    first = store.build_engine(spec(), engine_dir=str(tmp_path))
    assert (first["changed"], first["action"]) == (True, "build")
    path = first["path"]
    header = store.read_header(path)
    assert header["content_key"] == first["content_key"] == spec().key()
    assert header["built_for"] == spec().built_for()
    assert header["precision"] == "fp16" and header["batch_size"] == 64
    before = (Path(path).read_bytes(), os.stat(path).st_mtime_ns)
    second = store.build_engine(spec(), engine_dir=str(tmp_path))
    assert (second["changed"], second["action"]) == (False, "cached")
    assert (Path(path).read_bytes(), os.stat(path).st_mtime_ns) == before
    assert store.cache_status(spec(), path) == ("cached", "")


def test_changed_input_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = store.build_engine(spec(), engine_dir=str(tmp_path))["path"]
    model = models.MODELS["synth-mlp-small"]
    monkeypatch.setitem(models.MODELS, model.name, dataclasses.replace(model, version=2))
    action, reason = store.cache_status(spec(), path)
    assert action == "rebuild" and "content key changed (model)" in reason
    again = store.build_engine(spec(), engine_dir=str(tmp_path))
    assert (again["changed"], again["action"], again["path"]) == (True, "rebuild", path)
    assert store.read_header(path)["inputs"]["model"]["version"] == 2
    assert store.build_engine(spec(), engine_dir=str(tmp_path))["changed"] is False
    forced = store.build_engine(spec(), engine_dir=str(tmp_path), force=True)
    assert (forced["changed"], forced["reason"]) == (True, "forced")


def test_weights_by_accuracy_target(tmp_path: Path) -> None:
    model = models.MODELS["synth-mlp-small"]
    weights = model.weights()
    for accuracy, dtype in (("99", np.float16), ("99.9", np.float32)):
        path = store.build_engine(spec(accuracy_target=accuracy), engine_dir=str(tmp_path))["path"]
        header, payload = store.read_engine(path)
        tensors = store.load_tensors(header, payload)
        for name, value in weights.items():
            assert tensors[name].dtype == np.float32
            np.testing.assert_array_equal(tensors[name], value.astype(dtype).astype(np.float32))


def corrupt_variants(path: str) -> dict[str, bytes]:
    data = Path(path).read_bytes()
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    return {
        "truncated": data[:-100],
        "flipped": bytes(flipped),
        "magic": b"NOT-AN-ENGINE\n" + data[20:],
        "header": store.ENGINE_MAGIC + b"12\n{not json!}" + data[-64:],
        "empty": b"",
    }


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("truncated", "payload is .* bytes, header says"),
        ("flipped", "payload checksum mismatch"),
        ("magic", "does not start with"),
        ("header", "header is not JSON"),
        ("empty", "does not start with"),
    ],
)
def test_corrupt_engine_is_reported_and_rebuilt(tmp_path: Path, variant: str, message: str) -> None:
    path = store.build_engine(spec(), engine_dir=str(tmp_path))["path"]
    Path(path).write_bytes(corrupt_variants(path)[variant])
    with pytest.raises(EngineError, match="engine %s is corrupt \\(.*%s" % (path, message)):
        store.read_engine(path)
    action, reason = store.cache_status(spec(), path)
    assert action == "rebuild" and "corrupt" in reason
    repaired = store.build_engine(spec(), engine_dir=str(tmp_path))
    assert repaired["changed"] and store.read_engine(path)[0]["content_key"] == spec().key()


def test_missing_engine(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.engine")
    with pytest.raises(EngineError, match=r"engine .*none.engine does not exist: build it first"):
        store.read_header(missing)
    assert store.cache_status(spec(), missing)[0] == "build"


def test_wrong_format_version_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "x.engine")
    store.write_engine(path, {"content_key": "k", "built_for": {}}, [])
    data = Path(path).read_bytes().replace(b'"format_version": 1', b'"format_version": 7')
    Path(path).write_bytes(data)
    with pytest.raises(EngineError, match="format version 7; this harness reads version 1"):
        store.read_header(path)


# ------------------------------------------------------------------------------ fitting a slice
def test_engine_for_another_profile_is_refused(
    tmp_path: Path, layout: dict[str, Any], state_path: str
) -> None:
    small = target(layout["mig"]["1g.10gb"][0], state_path)
    large = target(layout["mig"]["2g.20gb"][0], state_path)
    built = store.build_engine(
        engine_spec.spec_for_target("synth-mlp-small", "Offline", "99", small),
        engine_dir=str(tmp_path),
    )
    path, header, _payload = store.locate_engine(
        None, built["path"], "synth-mlp-small", "Offline", "99", small
    )
    assert header["content_key"] == built["content_key"]
    with pytest.raises(EngineError) as refused:
        store.locate_engine(None, path, "synth-mlp-small", "Offline", "99", large)
    text = str(refused.value)
    assert "was built for H100-SXM5-80GB MIG 1g.10gb" in text
    assert "runs on %s (H100-SXM5-80GB MIG 2g.20gb)" % large.uuid in text
    assert "as TensorRT refuses an engine built for another GPU model or MIG profile" in text
    other_gpu = dataclasses.replace(small, gpu_model="A100-SXM4-40GB")
    with pytest.raises(EngineError, match=r"built for H100-SXM5-80GB MIG 1g.10gb, but .*A100"):
        store.check_fits(header, path, other_gpu, "synth-mlp-small", "Offline", "99")
    shared = dataclasses.replace(small, kind="gpu", profile="full-gpu")
    with pytest.raises(EngineError, match="whole GPU, shared, no MIG isolation"):
        store.check_fits(header, path, shared, "synth-mlp-small", "Offline", "99")


def test_engine_for_another_benchmark_or_stale_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = SliceTarget(kind="mig", gpu_model=H100, profile="1g.10gb")
    path = store.build_engine(spec(), engine_dir=str(tmp_path))["path"]
    header = store.read_header(path)
    with pytest.raises(EngineError, match=r"another benchmark: scenario Offline \(wanted Server\)"):
        store.check_fits(header, path, here, "synth-mlp-small", "Server", "99")
    with pytest.raises(EngineError, match=r"accuracy_target 99 \(wanted 99.9\)"):
        store.check_fits(header, path, here, "synth-mlp-small", "Offline", "99.9")
    model = models.MODELS["synth-mlp-small"]
    monkeypatch.setitem(models.MODELS, model.name, dataclasses.replace(model, version=3))
    with pytest.raises(EngineError, match="is stale"):
        store.check_fits(header, path, here, "synth-mlp-small", "Offline", "99")
    monkeypatch.setattr(store, "HARNESS_VERSION", "0.0.1")
    with pytest.raises(EngineError, match=r"harness version 0.1.0; this harness is version 0.0.1"):
        store.check_fits(header, path, here, "synth-mlp-small", "Offline", "99")


def test_engine_dir_lookup_names_the_profiles_it_has(tmp_path: Path) -> None:
    store.build_engine(spec(), engine_dir=str(tmp_path))
    store.build_engine(spec(profile="2g.20gb"), engine_dir=str(tmp_path))
    here = SliceTarget(kind="mig", gpu_model=H100, profile="3g.40gb", uuid="MIG-x")
    with pytest.raises(EngineError) as missing:
        store.locate_engine(str(tmp_path), None, "synth-mlp-small", "Offline", "99", here)
    assert "no engine for synth-mlp-small Offline 99 on H100-SXM5-80GB MIG 3g.40gb" in str(
        missing.value
    )
    assert "engines exist for: H100-SXM5-80GB 1g.10gb, H100-SXM5-80GB 2g.20gb" in str(missing.value)
    found = store.locate_engine(
        str(tmp_path),
        None,
        "synth-mlp-small",
        "Offline",
        "99",
        dataclasses.replace(here, profile="2g.20gb"),
    )
    assert found[0].endswith("/H100-SXM5-80GB/2g.20gb.engine")


# ------------------------------------------------------------------------------ the build check
def test_check_says_what_a_build_would_do_and_builds_nothing(
    layout: dict[str, Any], state_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_engine (the synthetic profile's build check) against build_engine's own outcomes."""
    monkeypatch.setenv(engine_spec.ENV_BACKEND, "sim")
    monkeypatch.setenv(engine_spec.ENV_SIM_STATE, state_path)
    device = layout["mig"]["2g.20gb"][0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", device)
    engines = str(tmp_path / "engines")
    here = engine_spec.spec_for_target(
        "synth-mlp-small", "Offline", "99", target(device, state_path)
    )
    first = store.check_engine("synth-mlp-small", "Offline", "99", engines)
    assert first == {
        "action": "build",
        "reason": "no engine at %s" % here.path(engines),
        "path": here.path(engines),
        "content_key": here.key(),
    }
    assert not os.path.exists(first["path"])
    built = store.build_engine(here, engine_dir=engines)
    assert built["content_key"] == first["content_key"]
    cached = store.check_engine("synth-mlp-small", "Offline", "99", engines)
    assert cached["action"] == "cached" and here.key()[:12] in cached["reason"]
    Path(first["path"]).write_bytes(b"not an engine")
    corrupt = store.check_engine("synth-mlp-small", "Offline", "99", engines)
    assert corrupt["action"] == "rebuild" and "is corrupt" in corrupt["reason"]


def test_check_command_line_and_its_errors(
    layout: dict[str, Any],
    state_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(engine_spec.ENV_BACKEND, "sim")
    monkeypatch.setenv(engine_spec.ENV_SIM_STATE, state_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", layout["gpu1"]["uuid"])
    base = ["check", "--model", "synth-mlp-small", "--scenario", "Offline"]
    base += ["--engine-dir", str(tmp_path)]
    assert store.main(base) == 2
    assert "names a whole GPU" in capsys.readouterr().err
    assert store.main([*base, "--allow-shared-gpu"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["action"] == "build" and "/full-gpu.engine" in line["path"]
    assert store.main([*base, "--allow-shared-gpu", "--harness-version", "9.9.9"]) == 2
    err = capsys.readouterr().err
    assert "controller's collection has 9.9.9" in err and "host_runtime" in err
    large = ["check", "--model", "synth-mlp-large", "--scenario", "SingleStream"]
    assert store.main([*large, "--engine-dir", str(tmp_path), "--allow-shared-gpu"]) == 2
    assert "does not support" in capsys.readouterr().err
    assert store.stamp_path(
        "/e", "nvidia_mlperf", "bert", "Offline", "hetero", H100, "1g.10gb"
    ) == ("/e/nvidia_mlperf/bert/Offline/hetero/H100-SXM5-80GB/1g.10gb.stamp")


# ------------------------------------------------------------------------------ engine_build plan
def test_slice_groups(layout: dict[str, Any]) -> None:
    host = layout["host"]
    groups = engine_build.slice_groups(host["mig_devices"], host["gpus"], shared_gpu=False)
    assert [(g.gpu_model, g.profile, len(g.devices)) for g in groups] == [
        (H100, "1g.10gb", 2),
        (H100, "2g.20gb", 1),
        (H100, "2c.3g.40gb", 1),
        (H100, "1c.3g.40gb", 1),
    ]
    ones = groups[0]
    assert [ones.take(), ones.take(), ones.take()] == [*ones.devices, ones.devices[0]]
    shared = engine_build.slice_groups(host["mig_devices"], host["gpus"], shared_gpu=True)
    assert (shared[-1].profile, shared[-1].devices, shared[-1].shared) == (
        "full-gpu",
        [layout["gpu1"]["uuid"]],
        True,
    )
    with pytest.raises(engine_build.BuildError, match="no MIG devices on this host: create"):
        engine_build.slice_groups([], host["gpus"], shared_gpu=False)
    alone = engine_build.slice_groups([], host["gpus"], shared_gpu=True)
    assert [(g.profile, g.shared) for g in alone] == [("full-gpu", True)]
