# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded harness's GPU-bound synthetic models, on PyTorch with CUDA.

``synth-resnet50`` is a convolutional network of ResNet-50's shape (bottleneck blocks 3-4-6-3,
224x224x3 inputs, 1000 outputs; batch norm folded into the convolutions' biases, as inference
engines do). ``synth-bert-large`` is an encoder of BERT-large's shape (24 layers, hidden 1024,
16 heads, feed-forward 4096, sequences of 384 tokens) with a question-answering head (start and
end logits per token). Both are synthetic: random weights from a fixed seed, random inputs, and
no claim about any task's accuracy. They are named ``synth-*`` like the numpy models.

- Weights are drawn in float32 on the CPU (torch's CPU generator, so every host gets the same
  ones); the engine of such a model holds the recipe (definition and seeds), not the weights.
- The benchmarked computation runs in float16 (target 99) or float32 with TF32 off (target
  99.9), channels-last for the convolutions, on the CUDA device of CUDA_VISIBLE_DEVICES.
- The batch is derived from the slice's memory (``memory_plan``), and a model that does not
  fit its slice is refused before anything is loaded.
- AccuracyOnly compares a few of the logged outputs with a float64 forward pass of the same
  network with the float32 master weights and inputs.
- A host without PyTorch or CUDA gets a clear error naming the model; the CPU runs these models
  (in float32, slowly) only when asked for with ``--compute torch-cpu``.

torch is imported only inside functions: the definitions and the memory plan are pure Python,
read on hosts (and controllers) without torch.

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._mlperf_terms import (
    ACCURACY_TARGETS,
    SCENARIOS,
    compute_slices,
)

# The precisions an engine can ask for (see _engine_spec.precision_for) and their bytes.
DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}
# Memory a CUDA process needs beside its tensors (context, cuBLAS/cuDNN workspaces, allocator
# slack). Measured on the H200: see docs/harness.md ("GPU-bound models").
RUNTIME_RESERVE_MIB = 1536
# Share of a slice's memory a process plans to use; the rest is left as headroom.
MEMORY_FRACTION = 0.9
# In the shared-GPU mode (no MIG) every benchmark process plans for this share of the GPU's
# memory, as if the GPU were cut into seven slices (the number of compute slices of a MIG GPU).
SHARED_GPU_PROCESSES = 7
# Samples compared with the float64 reference in an AccuracyOnly run.
REFERENCE_SAMPLES = 8
# Batch of the CPU fallback (--compute torch-cpu) for Offline and Server.
CPU_BATCH = 4
COMPUTE_CHOICES = ("auto", "numpy", "torch", "torch-cpu")


class GpuModelError(Exception):
    """A GPU model cannot run here (no torch, no CUDA, too little memory); the message says why."""


@dataclass(frozen=True)
class TorchModel:
    """One GPU-bound synthetic model: architecture, seeds, scenarios, tolerances."""

    name: str
    version: int
    description: str
    kind: str  # "resnet" or "bert"
    # resnet: (image size, stem width, (blocks, width) per stage, expansion)
    # bert: (layers, hidden, heads, feed-forward, sequence length, vocabulary, positions)
    config: Tuple[Any, ...]
    outputs: int
    weight_seed: int
    input_seed: int
    scenarios: Tuple[str, ...]
    categories: Tuple[str, ...]
    qsl_total: int
    qsl_performance: int
    # Per precision: the largest relative error per sample (max |out - ref| / max |ref|) that
    # counts as correct against the float64 reference.
    tolerances: Tuple[Tuple[str, float], ...]
    # Offline/Server batch per compute slice (7 for a whole GPU), before the memory limit.
    batch_per_slice: int
    backend = "torch"

    @property
    def tolerance(self) -> float:
        """The tolerance of the default precision (fp16)."""
        return self.tolerance_for("fp16")

    def tolerance_for(self, precision: str) -> float:
        return dict(self.tolerances)[precision]

    def supports(self, scenario: str) -> bool:
        return scenario in self.scenarios

    def definition(self) -> Dict[str, Any]:
        """Everything that determines the model's weights and outputs (for content keys)."""
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "backend": self.backend,
            "config": _plain(self.config),
            "outputs": self.outputs,
            "weight_seed": self.weight_seed,
            "input_seed": self.input_seed,
            "tolerances": dict(self.tolerances),
        }

    def describe(self) -> Dict[str, Any]:
        """What ``models --json`` prints."""
        return dict(
            self.definition(),
            description=self.description,
            scenarios=list(self.scenarios),
            categories=list(self.categories),
            accuracy_targets=list(ACCURACY_TARGETS),
            qsl_total=self.qsl_total,
            qsl_performance=self.qsl_performance,
            parameters=self.parameters(),
            macs_per_sample=self.macs_per_sample(),
            needs="PyTorch with a CUDA device (or --compute torch-cpu)",
        )

    # The engine store writes an engine's tensors from these: a GPU model's engine holds none
    # (its weights are drawn from the seed where it runs).
    def tensor_shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        return []

    def weights(self) -> Dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ shapes (pure)
    def parameter_shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        """(name, shape) of every weight tensor, in the order they are drawn."""
        if self.kind == "resnet":
            return [shape for layer in _resnet_convs(self.config) for shape in layer.shapes()] + [
                ("fc.w", (self.outputs, self._resnet_features())),
                ("fc.b", (self.outputs,)),
            ]
        if self.kind == "bert":
            layers, hidden, _heads, ffn, _seq, vocab, positions = self.config
            shapes: List[Tuple[str, Tuple[int, ...]]] = [
                ("emb.word", (vocab, hidden)),
                ("emb.pos", (positions, hidden)),
                ("emb.type", (2, hidden)),
                ("emb.ln.g", (hidden,)),
                ("emb.ln.b", (hidden,)),
            ]
            for layer in range(layers):
                p = "l%d." % layer
                shapes += [
                    (p + "qkv.w", (3 * hidden, hidden)),
                    (p + "qkv.b", (3 * hidden,)),
                    (p + "out.w", (hidden, hidden)),
                    (p + "out.b", (hidden,)),
                    (p + "ln1.g", (hidden,)),
                    (p + "ln1.b", (hidden,)),
                    (p + "ff1.w", (ffn, hidden)),
                    (p + "ff1.b", (ffn,)),
                    (p + "ff2.w", (hidden, ffn)),
                    (p + "ff2.b", (hidden,)),
                    (p + "ln2.g", (hidden,)),
                    (p + "ln2.b", (hidden,)),
                ]
            return [*shapes, ("qa.w", (2, hidden)), ("qa.b", (2,))]
        raise ValueError("unknown GPU model kind %r" % self.kind)

    def _resnet_features(self) -> int:
        return int(self.config[2][-1][1] * self.config[3])

    def parameters(self) -> int:
        total = 0
        for _name, shape in self.parameter_shapes():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total

    def input_elements(self) -> int:
        """Elements of one sample's input (an image, or token ids plus token types)."""
        if self.kind == "resnet":
            return 3 * self.config[0] * self.config[0]
        return 2 * self.config[4]

    def macs_per_sample(self) -> int:
        """Multiply-accumulates of one forward pass of one sample (convolutions and matmuls)."""
        if self.kind == "resnet":
            convs = sum(layer.macs() for layer in _resnet_convs(self.config))
            return convs + self.outputs * self._resnet_features()
        layers, hidden, _heads, ffn, seq, _vocab, _positions = self.config
        per_layer = seq * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * seq * seq * hidden
        return layers * per_layer + seq * 2 * hidden

    def activation_elements(self) -> int:
        """A bound on the elements one sample keeps alive at once during a forward pass."""
        if self.kind == "resnet":
            largest = max(layer.out_elements() for layer in _resnet_convs(self.config))
            return 5 * largest
        _layers, hidden, heads, ffn, seq, _vocab, _positions = self.config
        # hidden states and the attention's q, k, v and output, the feed-forward's inner
        # activations (twice: GELU is out of place), and scores with their softmax where the
        # attention is not fused (float32 and float64)
        return 8 * seq * hidden + 2 * seq * ffn + 2 * heads * seq * seq


@dataclass(frozen=True)
class _Conv:
    name: str
    out_channels: int
    in_channels: int
    kernel: int
    stride: int
    out_size: int  # output height and width

    def shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        return [
            (self.name + ".w", (self.out_channels, self.in_channels, self.kernel, self.kernel)),
            (self.name + ".b", (self.out_channels,)),
        ]

    def macs(self) -> int:
        return (
            self.out_channels
            * self.in_channels
            * self.kernel
            * self.kernel
            * self.out_size
            * self.out_size
        )

    def out_elements(self) -> int:
        return self.out_channels * self.out_size * self.out_size


def _resnet_convs(config: Tuple[Any, ...]) -> Iterator[_Conv]:
    """The convolutions of a ResNet v1.5 (stride in the 3x3 convolution) in forward order."""
    image, stem, stages, expansion = config
    size = (image + 1) // 2  # the stem's 7x7 convolution, stride 2
    yield _Conv("stem", stem, 3, 7, 2, size)
    size = (size + 1) // 2  # 3x3 max pool, stride 2
    channels = stem
    for stage, (blocks, width) in enumerate(stages):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            out = width * expansion
            name = "s%d.b%d." % (stage, block)
            yield _Conv(name + "c1", width, channels, 1, 1, size)
            size = (size + stride - 1) // stride
            yield _Conv(name + "c2", width, width, 3, stride, size)
            yield _Conv(name + "c3", out, width, 1, 1, size)
            if block == 0:
                yield _Conv(name + "down", out, channels, 1, stride, size)
            channels = out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


TORCH_MODELS: Dict[str, TorchModel] = {
    model.name: model
    for model in (
        TorchModel(
            name="synth-resnet50",
            version=1,
            description="ResNet-50-shaped CNN (bottlenecks 3-4-6-3, 224x224x3 -> 1000; "
            "~4.1G MACs per sample), random weights, PyTorch/CUDA fp16 channels-last",
            kind="resnet",
            config=(224, 64, ((3, 64), (4, 128), (6, 256), (3, 512)), 4),
            outputs=1000,
            weight_seed=1201,
            input_seed=2201,
            scenarios=SCENARIOS,
            categories=("datacenter", "edge"),
            qsl_total=1024,
            qsl_performance=1024,
            tolerances=(("fp16", 0.02), ("fp32", 0.0001)),
            batch_per_slice=64,
        ),
        TorchModel(
            name="synth-bert-large",
            version=1,
            description="BERT-large-shaped encoder (24 layers, hidden 1024, 16 heads, "
            "feed-forward 4096, 384 tokens) with start/end logits; random weights, "
            "PyTorch/CUDA fp16",
            kind="bert",
            config=(24, 1024, 16, 4096, 384, 30522, 512),
            outputs=2 * 384,
            weight_seed=1202,
            input_seed=2202,
            scenarios=("Offline", "Server", "SingleStream"),
            categories=("datacenter", "edge"),
            qsl_total=1024,
            qsl_performance=1024,
            tolerances=(("fp16", 0.02), ("fp32", 0.0001)),
            batch_per_slice=8,
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# Memory: the batch a slice holds, and models that do not fit (pure functions)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    batch: int
    need_mib: int  # at that batch
    budget_mib: int
    memory_mib: int
    parts_mib: Tuple[Tuple[str, int], ...]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "batch": self.batch,
            "need_mib": self.need_mib,
            "budget_mib": self.budget_mib,
            "memory_mib": self.memory_mib,
            "parts_mib": dict(self.parts_mib),
        }


def _mib(value: float) -> int:
    return int(-(-value // (1 << 20)))  # rounded up


def batch_limits(model: TorchModel, scenario: str, slices: int) -> Tuple[int, int]:
    """(smallest, largest) batch of ``scenario`` on a slice of ``slices`` compute slices."""
    if scenario == "SingleStream":
        return 1, 1
    if scenario == "MultiStream":
        return 8, 8  # LoadGen's samples per MultiStream query
    return 1, model.batch_per_slice * max(1, min(slices, 7))


def memory_plan(
    model: TorchModel,
    precision: str,
    scenario: str,
    mode: str,
    memory_mib: int,
    slices: int,
    shared_gpu: bool,
    where: str = "this slice",
) -> MemoryPlan:
    """The largest batch that fits ``memory_mib``; GpuModelError if the smallest does not.

    Counted: the runtime reserve, the weights and the query sample library on the device in
    ``precision``, and per sample of the batch the activations; AccuracyOnly adds the float64
    reference (its weights and one sample's activations).
    """
    width = DTYPE_BYTES[precision]
    share = SHARED_GPU_PROCESSES if shared_gpu else 1
    budget = int(memory_mib * MEMORY_FRACTION / share)
    input_width = width if model.kind == "resnet" else 8  # token ids are int64
    parts = [
        ("runtime reserve", RUNTIME_RESERVE_MIB),
        ("weights", _mib(model.parameters() * width)),
        ("query samples", _mib(model.qsl_total * model.input_elements() * input_width)),
    ]
    if mode == "AccuracyOnly":
        reference = model.parameters() + model.activation_elements() + model.input_elements()
        parts.append(("float64 reference", _mib(reference * 8)))
    fixed = sum(size for _name, size in parts)
    per_sample = model.activation_elements() * width
    smallest, largest = batch_limits(model, scenario, slices)
    need_smallest = fixed + _mib(smallest * per_sample)
    if need_smallest > budget:
        raise GpuModelError(
            "%s (%s, %s %s) does not fit %s: it needs about %d MiB at batch %d (%s, "
            "activations %d MiB), but %d MiB of its %d MiB may be used%s. Choose a slice with "
            "more memory%s"
            % (
                model.name,
                precision,
                scenario,
                mode,
                where,
                need_smallest,
                smallest,
                ", ".join("%s %d MiB" % part for part in parts),
                _mib(smallest * per_sample),
                budget,
                memory_mib,
                " (a seventh of the shared GPU, %d%% of it)" % (MEMORY_FRACTION * 100)
                if shared_gpu
                else " (%d%%)" % (MEMORY_FRACTION * 100),
                " or the 99 accuracy target (fp16)" if precision == "fp32" else "",
            )
        )
    room = (budget - fixed) * (1 << 20) // per_sample
    batch = max(smallest, min(largest, int(room)))
    if batch >= 16:
        batch -= batch % 8
    return MemoryPlan(
        batch=batch,
        need_mib=fixed + _mib(batch * per_sample),
        budget_mib=budget,
        memory_mib=memory_mib,
        parts_mib=tuple(parts),
    )


# ---------------------------------------------------------------------------------------------
# Where it runs: torch, CUDA, the slice
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchPlan:
    device: str  # "cuda" or "cpu"
    precision: str  # what runs: fp16 or fp32
    batch: int
    memory: Optional[MemoryPlan]


def _probe_torch() -> Tuple[Optional[str], bool]:
    """(torch's version or None when it does not import, whether it sees a CUDA device)."""
    try:
        import torch
    except ImportError:
        return None, False
    try:
        return str(torch.__version__), bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install reads as no CUDA
        return str(torch.__version__), False


def plan_run(
    model: TorchModel,
    choice: str,
    target: Any,
    scenario: str,
    mode: str,
    precision: str,
    probe: Any = _probe_torch,
) -> TorchPlan:
    """How ``model`` runs on ``target`` (a SliceTarget); GpuModelError when it cannot.

    The slice's memory is checked first (it is known before anything is loaded), then torch
    and CUDA. No fallback to the CPU unless ``choice`` is ``torch-cpu``.
    """
    memory = None
    if target.kind != "cpu" and target.memory_total_mib and choice != "torch-cpu":
        memory = memory_plan(
            model,
            precision,
            scenario,
            mode,
            int(target.memory_total_mib),
            compute_slices(target.profile),
            bool(target.shared_gpu),
            where=target.describe(),
        )
    if choice == "numpy":
        raise GpuModelError(
            "%s has no numpy implementation: it runs on PyTorch with CUDA (--compute auto or "
            "torch), or on the CPU with --compute torch-cpu" % model.name
        )
    version, cuda = probe()
    if choice == "torch-cpu":
        if version is None:
            raise GpuModelError(
                "%s needs PyTorch (torch) even on the CPU (--compute torch-cpu), and torch is "
                "not installed for %s" % (model.name, sys.executable)
            )
        return TorchPlan("cpu", "fp32", min(CPU_BATCH, batch_limits(model, scenario, 1)[1]), None)
    fallback = "; --compute torch-cpu runs it on the CPU instead (slow, float32)"
    if target.kind == "cpu":
        raise GpuModelError(
            "%s needs a CUDA device, and CUDA_VISIBLE_DEVICES names none%s" % (model.name, fallback)
        )
    if target.backend == "sim":
        raise GpuModelError(
            "%s needs PyTorch with a CUDA device, and %s is a simulated slice with no CUDA "
            "device behind it%s" % (model.name, target.uuid, fallback)
        )
    if version is None:
        raise GpuModelError(
            "%s needs PyTorch (torch) with CUDA, which is not installed for %s%s"
            % (model.name, sys.executable, fallback)
        )
    if not cuda:
        raise GpuModelError(
            "%s needs PyTorch with CUDA: torch %s is installed for %s but sees no CUDA device "
            "(CUDA_VISIBLE_DEVICES=%s)%s"
            % (model.name, version, sys.executable, target.visible_devices, fallback)
        )
    batch = memory.batch if memory else batch_limits(model, scenario, 7)[1]
    return TorchPlan("cuda", precision, batch, memory)


# ---------------------------------------------------------------------------------------------
# The networks (torch)
# ---------------------------------------------------------------------------------------------
def master_weights(model: TorchModel) -> Dict[str, Any]:
    """float32 weights on the CPU from the model's seed (He-scaled convolutions, BERT's 0.02)."""
    import torch

    generator = torch.Generator().manual_seed(model.weight_seed * 1000 + model.version)
    weights: Dict[str, Any] = {}
    for name, shape in model.parameter_shapes():
        value = torch.randn(shape, generator=generator, dtype=torch.float32)
        if model.kind == "resnet":
            if len(shape) == 1:
                value *= 0.01
            else:
                fan_in = 1
                for size in shape[1:]:
                    fan_in *= size
                # the last convolution of a residual branch stands for a folded batch norm
                # with a small scale, which keeps the activations' size steady over 16 blocks
                value *= (2.0 / fan_in) ** 0.5 * (0.2 if name.endswith("c3.w") else 1.0)
        elif name.endswith(".g"):
            value = 1.0 + 0.1 * value
        else:
            value *= 0.02
        weights[name] = value
    return weights


def sample_inputs(model: TorchModel, indices: Any) -> Tuple[Any, ...]:
    """The inputs of the samples ``indices`` (each from its own seed): float32 images, or
    (token ids, token types) as int64."""
    import torch

    generator = torch.Generator()
    rows = []
    for index in indices:
        generator.manual_seed((model.input_seed * 1000 + model.version) * 1000003 + int(index))
        if model.kind == "resnet":
            size = model.config[0]
            rows.append(torch.randn((3, size, size), generator=generator))
        else:
            rows.append(torch.randint(0, model.config[5], (model.config[4],), generator=generator))
    stacked = torch.stack(rows)
    if model.kind == "resnet":
        return (stacked,)
    seq = model.config[4]
    types = torch.zeros((len(rows), seq), dtype=torch.int64)
    types[:, seq // 6 :] = 1  # a question, then its context
    return stacked, types


def forward(model: TorchModel, weights: Dict[str, Any], inputs: Tuple[Any, ...]) -> Any:
    """The network on ``inputs``; (batch, outputs) in the weights' dtype."""
    import torch
    from torch.nn import functional

    if model.kind == "resnet":
        x = inputs[0]
        for conv in _resnet_convs(model.config):
            if conv.name == "stem":
                x = torch.relu(functional.conv2d(x, weights["stem.w"], weights["stem.b"], 2, 3))
                x = functional.max_pool2d(x, 3, 2, 1)
            elif conv.name.endswith("c1"):
                block_in = x
                x = torch.relu(
                    functional.conv2d(x, weights[conv.name + ".w"], weights[conv.name + ".b"])
                )
            elif conv.name.endswith("c2"):
                x = torch.relu(
                    functional.conv2d(
                        x, weights[conv.name + ".w"], weights[conv.name + ".b"], conv.stride, 1
                    )
                )
            elif conv.name.endswith("c3"):
                x = functional.conv2d(x, weights[conv.name + ".w"], weights[conv.name + ".b"])
                prefix = conv.name[: -len("c3")]
                if prefix + "down.w" not in weights:
                    x = torch.relu(x + block_in)
            else:  # the block's downsampling shortcut
                shortcut = functional.conv2d(
                    block_in, weights[conv.name + ".w"], weights[conv.name + ".b"], conv.stride
                )
                x = torch.relu(x + shortcut)
        x = x.mean(dim=(2, 3))
        return functional.linear(x, weights["fc.w"], weights["fc.b"])
    layers, hidden, heads, _ffn, _seq, _vocab, _positions = model.config
    ids, types = inputs
    batch, seq = ids.shape
    norm = functional.layer_norm
    h = (
        functional.embedding(ids, weights["emb.word"])
        + weights["emb.pos"][:seq]
        + functional.embedding(types, weights["emb.type"])
    )
    h = norm(h, (hidden,), weights["emb.ln.g"], weights["emb.ln.b"], 1e-12)
    for layer in range(layers):
        p = "l%d." % layer
        qkv = functional.linear(h, weights[p + "qkv.w"], weights[p + "qkv.b"])
        q, k, v = qkv.view(batch, seq, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        attended = functional.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).reshape(batch, seq, hidden)
        h = norm(
            h + functional.linear(attended, weights[p + "out.w"], weights[p + "out.b"]),
            (hidden,),
            weights[p + "ln1.g"],
            weights[p + "ln1.b"],
            1e-12,
        )
        inner = functional.gelu(functional.linear(h, weights[p + "ff1.w"], weights[p + "ff1.b"]))
        h = norm(
            h + functional.linear(inner, weights[p + "ff2.w"], weights[p + "ff2.b"]),
            (hidden,),
            weights[p + "ln2.g"],
            weights[p + "ln2.b"],
            1e-12,
        )
    logits = functional.linear(h, weights["qa.w"], weights["qa.b"])  # (batch, seq, 2)
    return logits.permute(0, 2, 1).reshape(batch, 2 * seq)  # start logits, then end logits


# ---------------------------------------------------------------------------------------------
# The compute the harness's system under test calls
# ---------------------------------------------------------------------------------------------
class TorchModelCompute:
    """Runs batches of sample indices through a GPU model; returns float32 (n, outputs)."""

    name = "torch"

    def __init__(self, model: TorchModel, plan: TorchPlan) -> None:
        import numpy
        import torch

        self.np = numpy
        self.torch = torch
        self.model = model
        self.plan = plan
        self.max_batch = plan.batch
        self.device = torch.device(plan.device)
        if plan.device == "cuda":
            # fp32 means fp32: TF32 would round the products to fp16's mantissa
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.dtype = torch.float16 if plan.precision == "fp16" else torch.float32
        self.channels_last = model.kind == "resnet" and plan.device == "cuda"
        self.weights = self._place(master_weights(model), self.dtype)
        inputs = sample_inputs(model, range(model.qsl_total))
        self.qsl = tuple(self._place_input(tensor, self.dtype) for tensor in inputs)
        del inputs

    def _place(self, weights: Dict[str, Any], dtype: Any) -> Dict[str, Any]:
        placed = {}
        for name, value in weights.items():
            tensor = value.to(self.device, dtype)
            if self.channels_last and tensor.dim() == 4 and dtype != self.torch.float64:
                tensor = tensor.contiguous(memory_format=self.torch.channels_last)
            placed[name] = tensor
        return placed

    def _place_input(self, tensor: Any, dtype: Any) -> Any:
        if tensor.is_floating_point():
            tensor = tensor.to(self.device, dtype)
            if self.channels_last and dtype != self.torch.float64:
                tensor = tensor.contiguous(memory_format=self.torch.channels_last)
            return tensor
        return tensor.to(self.device)

    def padded(self, count: int) -> int:
        """The batch ``count`` samples run as on a GPU: the next power of two, at most
        max_batch, so that only a few shapes ever reach cuDNN and cuBLAS."""
        if self.plan.device != "cuda" or count >= self.max_batch:
            return count
        return min(self.max_batch, 1 << max(0, count - 1).bit_length())

    def __call__(self, indices: Any) -> Any:
        torch = self.torch
        count = len(indices)
        size = self.padded(count)
        if size != count:  # the padding repeats the batch's own samples
            indices = self.np.resize(indices, size)
        with torch.inference_mode():
            index = torch.as_tensor(indices, device=self.device)
            batch = tuple(tensor.index_select(0, index) for tensor in self.qsl)
            if self.channels_last:
                batch = (batch[0].contiguous(memory_format=torch.channels_last),)
            out = forward(self.model, self.weights, batch)[:count]
            return self.np.ascontiguousarray(out.float().cpu().numpy())

    def describe(self) -> str:
        torch = self.torch
        where = (
            "%s (%s)" % (self.device, torch.cuda.get_device_name(self.device))
            if self.plan.device == "cuda"
            else "the CPU"
        )
        memory = self.plan.memory
        return "torch %s on %s, %s%s, batch %d%s" % (
            torch.__version__,
            where,
            self.plan.precision,
            ", channels-last" if self.channels_last else "",
            self.max_batch,
            " (memory plan: about %d of %d MiB)" % (memory.need_mib, memory.memory_mib)
            if memory
            else "",
        )

    def tolerance(self) -> float:
        return self.model.tolerance_for(self.plan.precision)

    def accuracy_reference(self, indices: Any) -> Tuple[Any, Any, float, str]:
        """(rows of ``indices`` checked, their float64 reference outputs, tolerance, what).

        A few samples, spread over the logged ones, go through the same network in float64
        with the float32 master weights and inputs, on the same device, one at a time.
        """
        np = self.np
        torch = self.torch
        count = len(indices)
        rows = np.unique(np.linspace(0, count - 1, min(REFERENCE_SAMPLES, count)).round())
        rows = rows.astype(np.int64)
        weights = {
            name: value.to(self.device, torch.float64)
            for name, value in master_weights(self.model).items()
        }
        outputs = []
        with torch.inference_mode():
            for row in rows:
                inputs = sample_inputs(self.model, [int(indices[row])])
                placed = tuple(
                    t.to(self.device, torch.float64) if t.is_floating_point() else t.to(self.device)
                    for t in inputs
                )
                outputs.append(forward(self.model, weights, placed).cpu().numpy()[0])
        del weights
        what = "float64 forward pass of %d of the %d logged samples (float32 master weights)" % (
            len(rows),
            count,
        )
        return rows, np.asarray(outputs, dtype=np.float64), self.tolerance(), what
