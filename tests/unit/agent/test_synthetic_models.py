"""The embedded harness's synthetic models: determinism, compute, reference and tolerances."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    ACCURACY_TARGETS,
    MODELS,
    REQUIRED_ACCURACY,
    SCENARIOS,
    ModelError,
    SyntheticModel,
    _conv1d,
    check_combination,
    get_model,
    normalize_scenario,
)

ALL = sorted(MODELS)
# MLPerf Inference benchmark names (v0.5 to v5.1): a synthetic model must never be named so.
MLPERF_NAMES = (
    "resnet",
    "mobilenet",
    "ssd",
    "retinanet",
    "bert",
    "dlrm",
    "unet",
    "rnnt",
    "gpt",
    "llama",
    "mixtral",
    "stable-diffusion",
    "sdxl",
    "gnn",
    "pointpainting",
    "deepseek",
    "whisper",
)


@pytest.mark.parametrize("name", ALL)
def test_models_are_named_as_synthetic(name: str) -> None:
    assert name.startswith("synth-")
    assert not any(word in name for word in MLPERF_NAMES)
    model = MODELS[name]
    assert model.name == name
    assert set(model.scenarios) <= set(SCENARIOS) and model.scenarios
    assert set(model.categories) <= {"datacenter", "edge"} and model.categories
    assert 0 < model.qsl_performance <= model.qsl_total


def test_every_scenario_is_offered_by_some_model_and_some_model_lacks_one() -> None:
    offered = {scenario for model in MODELS.values() for scenario in model.scenarios}
    assert offered == set(SCENARIOS)
    assert any(set(model.scenarios) != set(SCENARIOS) for model in MODELS.values())


@pytest.mark.parametrize("name", ALL)
def test_weights_and_inputs_are_deterministic(name: str) -> None:
    model = MODELS[name]
    first, second = model.weights(), model.weights()
    assert list(first) == [tensor for tensor, _shape in model.tensor_shapes()]
    for tensor, shape in model.tensor_shapes():
        assert first[tensor].shape == shape
        assert first[tensor].dtype == np.float64
        np.testing.assert_array_equal(first[tensor], second[tensor])
    inputs = model.inputs()
    assert inputs.shape == (model.qsl_total, *model.input_shape)
    assert inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs, model.inputs())
    np.testing.assert_array_equal(model.inputs(7), inputs[:7])


def test_models_differ_from_each_other() -> None:
    keys = {json.dumps(model.definition(), sort_keys=True) for model in MODELS.values()}
    assert len(keys) == len(MODELS)


@pytest.mark.parametrize("name", ALL)
def test_float32_and_float16_weights_stay_within_tolerance(name: str) -> None:
    model = MODELS[name]
    weights = model.weights()
    inputs = model.inputs()
    indices = np.arange(model.qsl_total)
    reference = model.reference(indices, inputs)
    assert reference.shape == (model.qsl_total, model.outputs)
    assert np.abs(reference).max() > 0.1  # outputs carry signal, not zeros
    for dtype in (np.float32, np.float16):
        cast = {key: value.astype(dtype).astype(np.float32) for key, value in weights.items()}
        out = model.forward(cast, inputs)
        assert out.dtype == np.float32
        assert model.within_tolerance(out, reference).all(), dtype


@pytest.mark.parametrize("name", ALL)
def test_tolerance_check_catches_wrong_outputs(name: str) -> None:
    model = MODELS[name]
    indices = np.arange(32)
    reference = model.reference(indices)
    wrong = reference.astype(np.float32).copy()
    wrong[::4] += 0.5 * np.abs(reference).max()
    good = model.within_tolerance(wrong, reference)
    assert list(np.flatnonzero(~good)) == list(range(0, 32, 4))


def test_conv1d_matches_a_direct_convolution() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 20))
    kernels = rng.standard_normal((5, 4, 3))
    expected = np.zeros((3, 5, 18))
    for b in range(3):
        for o in range(5):
            for position in range(18):
                expected[b, o, position] = np.sum(x[b, :, position : position + 3] * kernels[o])
    np.testing.assert_allclose(_conv1d(x, kernels), expected, rtol=1e-12, atol=1e-12)


def test_macs_per_sample() -> None:
    small = MODELS["synth-mlp-small"]
    widths = [small.input_shape[0], *small.layers, small.outputs]
    assert small.macs_per_sample() == sum(a * b for a, b in itertools.pairwise(widths))
    conv = MODELS["synth-conv-1d"]
    (c1, k1), (c2, k2) = conv.layers
    channels, length = conv.input_shape
    l1 = length - k1 + 1
    l2 = l1 - k2 + 1
    assert conv.macs_per_sample() == l1 * c1 * channels * k1 + l2 * c2 * c1 * k2 + c2 * conv.outputs


def test_check_combination() -> None:
    assert check_combination("synth-mlp-small", "Server", "99.9") is MODELS["synth-mlp-small"]
    with pytest.raises(ModelError, match=r"unknown model 'resnet50'.*synth-conv-1d"):
        get_model("resnet50")
    with pytest.raises(ModelError, match="synth-mlp-large does not support the SingleStream"):
        check_combination("synth-mlp-large", "SingleStream", "99")
    with pytest.raises(ModelError, match="unknown scenario 'Batch'"):
        check_combination("synth-mlp-small", "Batch", "99")
    with pytest.raises(ModelError, match="unknown accuracy target '98'"):
        check_combination("synth-mlp-small", "Offline", "98")


def test_accuracy_targets() -> None:
    assert ACCURACY_TARGETS == ("99", "99.9")
    assert REQUIRED_ACCURACY == {"99": 0.99, "99.9": 0.999}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("offline", "Offline"),
        ("SERVER", "Server"),
        ("single_stream", "SingleStream"),
        ("multi-stream", "MultiStream"),
        ("Offline", "Offline"),
        ("batch", "batch"),
    ],
)
def test_normalize_scenario(text: str, expected: str) -> None:
    assert normalize_scenario(text) == expected


def test_describe_is_json() -> None:
    for model in MODELS.values():
        described = json.loads(json.dumps(model.describe()))
        assert described["name"] == model.name
        assert described["scenarios"] == list(model.scenarios)


def test_unknown_kind_is_refused() -> None:
    broken = SyntheticModel(
        name="synth-x",
        version=1,
        description="",
        kind="rnn",
        input_shape=(4,),
        layers=(),
        outputs=1,
        weight_seed=1,
        input_seed=2,
        scenarios=("Offline",),
        categories=("edge",),
        qsl_total=4,
        qsl_performance=4,
    )
    with pytest.raises(ValueError, match="unknown model kind"):
        broken.tensor_shapes()
