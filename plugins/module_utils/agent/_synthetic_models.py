# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded harness's synthetic models: small, deterministic networks with real compute.

The models are named ``synth-*`` on purpose: they are stand-ins that make the heterogeneous
pipeline run real benchmark processes anywhere, never MLPerf models. Each model is fully defined
by the data in its ``SyntheticModel`` entry (layer sizes, seeds, version):

- its weights are drawn from its seed (float64), so every host builds the same model;
- its inputs (the query sample library) are drawn from a second seed;
- ``forward`` runs the model with numpy in float32 (the benchmarked computation);
- ``reference`` runs the same model in float64 on the original (unrounded) weights, which is what
  AccuracyOnly runs are checked against;
- ``TorchForward`` runs the same model with PyTorch on a CUDA device when the host has one.

The GPU-bound models (``synth-resnet50``, ``synth-bert-large``) are defined in _torch_models;
``ALL_MODELS`` and ``get_model`` cover both kinds.

This module imports numpy (and torch) only inside functions: modules on the controller side of a
target (engine_build) read the model definitions without numpy installed.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import (
    ACCURACY_TARGETS,
    SCENARIOS,
)
from ansible_collections.heteromig.fleet.plugins.module_utils.agent._torch_models import (
    TORCH_MODELS,
    TorchModel,
)

# Required fraction of samples within tolerance, per accuracy target (MLPerf's "99" / "99.9"
# naming: the fraction of the reference accuracy a submission must reach).
REQUIRED_ACCURACY = {"99": 0.99, "99.9": 0.999}

# Samples per MultiStream query (LoadGen's default multi_stream_samples_per_query).
MULTI_STREAM_SAMPLES = 8


@dataclass(frozen=True)
class SyntheticModel:
    """One synthetic model: its architecture, seeds, scenarios and accuracy tolerance."""

    name: str
    version: int
    description: str
    kind: str  # "mlp" or "conv1d"
    input_shape: Tuple[int, ...]
    # mlp: hidden layer widths; conv1d: (channels, kernel) per convolution
    layers: Tuple[Any, ...]
    outputs: int
    weight_seed: int
    input_seed: int
    scenarios: Tuple[str, ...]
    categories: Tuple[str, ...]  # "datacenter" and/or "edge", like MLPerf's suites
    qsl_total: int
    qsl_performance: int
    # Largest relative error per sample (max |out - ref| / max |ref|) that counts as correct.
    tolerance: float = 1e-2

    def supports(self, scenario: str) -> bool:
        return scenario in self.scenarios

    def definition(self) -> Dict[str, Any]:
        """Everything that determines the model's weights and outputs (for content keys)."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "layers": [list(layer) if isinstance(layer, tuple) else layer for layer in self.layers],
            "outputs": self.outputs,
            "weight_seed": self.weight_seed,
            "input_seed": self.input_seed,
            "tolerance": self.tolerance,
        }

    def describe(self) -> Dict[str, Any]:
        """What ``models --json`` prints: the definition plus scenarios and QSL sizes."""
        return dict(
            self.definition(),
            description=self.description,
            scenarios=list(self.scenarios),
            categories=list(self.categories),
            accuracy_targets=list(ACCURACY_TARGETS),
            qsl_total=self.qsl_total,
            qsl_performance=self.qsl_performance,
            macs_per_sample=self.macs_per_sample(),
        )

    # ------------------------------------------------------------------ shapes
    def tensor_shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        """(name, shape) of every weight tensor, in a fixed order."""
        shapes: List[Tuple[str, Tuple[int, ...]]] = []
        if self.kind == "mlp":
            width = self.input_shape[0]
            for position, hidden in enumerate(self.layers):
                shapes.append(("w%d" % position, (width, hidden)))
                shapes.append(("b%d" % position, (hidden,)))
                width = hidden
            shapes.append(("w_out", (width, self.outputs)))
            shapes.append(("b_out", (self.outputs,)))
        elif self.kind == "conv1d":
            channels = self.input_shape[0]
            for position, (out_channels, kernel) in enumerate(self.layers):
                shapes.append(("c%d" % position, (out_channels, channels, kernel)))
                shapes.append(("cb%d" % position, (out_channels,)))
                channels = out_channels
            shapes.append(("w_out", (channels, self.outputs)))
            shapes.append(("b_out", (self.outputs,)))
        else:
            raise ValueError("unknown model kind %r" % self.kind)
        return shapes

    def macs_per_sample(self) -> int:
        """Multiply-accumulates of one forward pass of one sample."""
        total = 0
        length = self.input_shape[-1] if self.kind == "conv1d" else 0
        for name, shape in self.tensor_shapes():
            if name.startswith("w"):
                total += shape[0] * shape[1]
            elif name.startswith("c") and not name.startswith("cb"):
                length = length - shape[2] + 1
                total += length * shape[0] * shape[1] * shape[2]
        return total

    # ------------------------------------------------------------------ data
    def weights(self) -> Dict[str, Any]:
        """The model's float64 weights, drawn from its seed (He-scaled normal, small biases)."""
        import numpy as np

        rng = np.random.default_rng([self.weight_seed, self.version])
        result: Dict[str, Any] = {}
        for name, shape in self.tensor_shapes():
            if len(shape) == 1:
                result[name] = rng.standard_normal(shape) * 0.05
            else:
                fan_in = int(np.prod(shape[1:])) if name.startswith("c") else shape[0]
                result[name] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        return result

    def inputs(self, count: Optional[int] = None) -> Any:
        """The query sample library's inputs: ``count`` (default qsl_total) float32 samples."""
        import numpy as np

        rng = np.random.default_rng([self.input_seed, self.version])
        total = self.qsl_total if count is None else count
        return rng.standard_normal((total, *self.input_shape)).astype(np.float32)

    # ------------------------------------------------------------------ compute
    def forward(self, weights: Dict[str, Any], batch: Any) -> Any:
        """The forward pass with numpy; dtype follows ``weights`` and ``batch``."""
        import numpy as np

        x = batch
        if self.kind == "mlp":
            for position in range(len(self.layers)):
                x = np.maximum(x @ weights["w%d" % position] + weights["b%d" % position], 0)
        else:
            for position in range(len(self.layers)):
                x = (
                    _conv1d(x, weights["c%d" % position])
                    + weights["cb%d" % position][None, :, None]
                )
                x = np.maximum(x, 0)
            x = x.mean(axis=2)
        return x @ weights["w_out"] + weights["b_out"]

    def reference(self, indices: Any, inputs: Optional[Any] = None) -> Any:
        """float64 outputs of the samples ``indices`` with the original float64 weights."""
        import numpy as np

        data = self.inputs() if inputs is None else inputs
        batch = np.asarray(data[np.asarray(indices)], dtype=np.float64)
        return self.forward(self.weights(), batch)

    def within_tolerance(self, outputs: Any, reference: Any) -> Any:
        """Per sample: whether max |out - ref| <= tolerance * max(|ref|) (bool array)."""
        import numpy as np

        out = np.asarray(outputs, dtype=np.float64).reshape(len(reference), -1)
        ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
        scale = np.maximum(np.abs(ref).max(axis=1), 1e-6)
        error = np.abs(out - ref).max(axis=1) / scale
        return error <= self.tolerance


def _conv1d(x: Any, kernels: Any) -> Any:
    """'valid' 1-D convolution: x (B, C, L), kernels (O, C, K) -> (B, O, L-K+1), as a matmul."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    out_channels, channels, width = kernels.shape
    windows = sliding_window_view(x, width, axis=2)  # (B, C, L', K)
    batch, length = windows.shape[0], windows.shape[2]
    columns = windows.transpose(0, 2, 1, 3).reshape(batch * length, channels * width)
    result = columns @ kernels.reshape(out_channels, channels * width).T
    return np.ascontiguousarray(result.reshape(batch, length, out_channels).transpose(0, 2, 1))


MODELS: Dict[str, SyntheticModel] = {
    model.name: model
    for model in (
        SyntheticModel(
            name="synth-mlp-small",
            version=1,
            description="3-layer MLP, 256 inputs, 16 outputs (~0.4M MACs per sample)",
            kind="mlp",
            input_shape=(256,),
            layers=(512, 512),
            outputs=16,
            weight_seed=1101,
            input_seed=2101,
            scenarios=SCENARIOS,
            categories=("datacenter", "edge"),
            qsl_total=1024,
            qsl_performance=256,
        ),
        SyntheticModel(
            name="synth-mlp-large",
            version=1,
            description="4-layer MLP, 512 inputs, 64 outputs (~2.6M MACs per sample)",
            kind="mlp",
            input_shape=(512,),
            layers=(1024, 1024, 1024),
            outputs=64,
            weight_seed=1102,
            input_seed=2102,
            scenarios=("Server", "Offline"),
            categories=("datacenter",),
            qsl_total=1024,
            qsl_performance=256,
        ),
        SyntheticModel(
            name="synth-conv-1d",
            version=1,
            description="two 1-D convolutions over 8x128 inputs, 10 outputs (~0.25M MACs)",
            kind="conv1d",
            input_shape=(8, 128),
            layers=((16, 5), (16, 5)),
            outputs=10,
            weight_seed=1103,
            input_seed=2103,
            scenarios=("SingleStream", "MultiStream", "Offline"),
            categories=("edge",),
            qsl_total=512,
            qsl_performance=128,
        ),
    )
}


# Every model the embedded harness offers: the numpy models above (any host) and the GPU-bound
# ones of _torch_models (PyTorch with CUDA).
AnyModel = Union[SyntheticModel, TorchModel]
ALL_MODELS: Dict[str, AnyModel] = {**MODELS, **TORCH_MODELS}


class ModelError(ValueError):
    """An unknown model, or a scenario or accuracy target the model does not support."""


def get_model(name: str) -> AnyModel:
    model: Optional[AnyModel] = MODELS.get(name) or TORCH_MODELS.get(name)
    if model is None:
        raise ModelError(
            "unknown model %r: the embedded harness offers %s"
            % (name, ", ".join(sorted(ALL_MODELS)))
        )
    return model


def is_torch_model(model: Any) -> bool:
    """Whether ``model`` is one of the GPU-bound models that run on PyTorch only."""
    return isinstance(model, TorchModel)


def check_combination(name: str, scenario: str, accuracy_target: str) -> AnyModel:
    """The model, if it supports ``scenario`` and ``accuracy_target``; ModelError otherwise."""
    model = get_model(name)
    if scenario not in SCENARIOS:
        raise ModelError("unknown scenario %r: choose one of %s" % (scenario, ", ".join(SCENARIOS)))
    if not model.supports(scenario):
        raise ModelError(
            "model %s does not support the %s scenario; it supports %s"
            % (name, scenario, ", ".join(model.scenarios))
        )
    if accuracy_target not in ACCURACY_TARGETS:
        raise ModelError(
            "unknown accuracy target %r: choose one of %s"
            % (accuracy_target, ", ".join(ACCURACY_TARGETS))
        )
    return model


def normalize_scenario(value: str) -> str:
    """'offline' / 'Offline' / 'single_stream' -> 'Offline' / 'SingleStream'; else unchanged."""
    squashed = str(value).replace("_", "").replace("-", "").lower()
    for scenario in SCENARIOS:
        if scenario.lower() == squashed:
            return scenario
    return str(value)


class TorchForward:
    """The same model on a CUDA device with PyTorch (used when torch and CUDA are present)."""

    def __init__(self, model: SyntheticModel, weights: Dict[str, Any], device: str) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.device = torch.device(device)
        self.weights = {
            name: torch.as_tensor(value, dtype=torch.float32, device=self.device)
            for name, value in weights.items()
        }

    def to_device(self, array: Any) -> Any:
        return self.torch.as_tensor(array, dtype=self.torch.float32, device=self.device)

    def __call__(self, batch: Any) -> Any:
        """``batch`` is a tensor on the device; returns a float32 numpy array on the host."""
        torch = self.torch
        functional = torch.nn.functional
        weights = self.weights
        with torch.inference_mode():
            x = batch
            if self.model.kind == "mlp":
                for position in range(len(self.model.layers)):
                    x = torch.relu(x @ weights["w%d" % position] + weights["b%d" % position])
            else:
                for position in range(len(self.model.layers)):
                    x = functional.conv1d(x, weights["c%d" % position], weights["cb%d" % position])
                    x = torch.relu(x)
                x = x.mean(dim=2)
            out = x @ weights["w_out"] + weights["b_out"]
            return out.float().cpu().numpy()
