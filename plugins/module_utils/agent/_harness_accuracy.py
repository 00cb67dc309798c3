# -*- coding: utf-8 -*-
# Copyright: heteromig developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The embedded harness's accuracy check: LoadGen's logged outputs against a float64 reference.

An AccuracyOnly run logs every sample's output in ``mlperf_log_accuracy.json``. The numpy models
compare every logged sample with their float64 forward pass; the GPU models of _torch_models
compare a few (their reference runs the whole network in float64) and require every logged
output to be finite. One line goes into ``accuracy.txt`` ("accuracy=...%: PASS" or ": FAIL").

Private module (leading underscore): not a public API of the collection.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.heteromig.fleet.plugins.module_utils.agent._synthetic_models import (
    REQUIRED_ACCURACY,
)

ACCURACY_FILE = "accuracy.txt"
# (indices logged) -> (rows of them checked, float64 reference of those rows, tolerance, what)
Reference = Callable[[Any], Tuple[Any, Any, float, str]]


class AccuracyLogError(Exception):
    """LoadGen's accuracy log cannot be read."""


def relative_errors(outputs: Any, reference: Any) -> Any:
    """Per sample: max |out - ref| / max |ref| (NaN or inf where the output is not finite)."""
    import numpy as np

    out = np.asarray(outputs, dtype=np.float64).reshape(len(reference), -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    scale = np.maximum(np.abs(ref).max(axis=1), 1e-6)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs(out - ref).max(axis=1) / scale


def check_accuracy(
    model: Any,
    log_dir: str,
    data: Any,
    accuracy_target: str,
    reference: Optional[Reference] = None,
) -> Dict[str, Any]:
    """Compare the outputs LoadGen logged against the float64 reference; write accuracy.txt.

    ``reference`` (a GPU model's compute) picks the rows it checks; without it every logged
    sample is compared with ``model.reference`` on ``data``.
    """
    import numpy as np

    path = os.path.join(log_dir, "mlperf_log_accuracy.json")
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except (OSError, ValueError) as exc:
        raise AccuracyLogError("cannot read LoadGen's accuracy log %s: %s" % (path, exc)) from None
    logged: Dict[int, str] = {}
    for entry in entries:
        logged.setdefault(int(entry["qsl_idx"]), entry["data"])
    indices = sorted(logged)
    outputs = np.zeros((len(indices), model.outputs), dtype=np.float32)
    sized = np.ones(len(indices), dtype=bool)
    for row, index in enumerate(indices):
        values = np.frombuffer(bytes.fromhex(logged[index]), dtype=np.float32)
        if values.size == model.outputs:
            outputs[row] = values
        else:
            sized[row] = False
    if reference is None or not indices:
        rows = np.arange(len(indices))
        expected = model.reference(indices, data) if indices else np.zeros((0, model.outputs))
        tolerance = model.tolerance
        what = "float64 forward pass with the unrounded weights"
    else:
        rows, expected, tolerance, what = reference(indices)
    errors = relative_errors(outputs[rows], expected)
    correct = (errors <= tolerance) & sized[rows]
    finite = sized & np.isfinite(outputs).all(axis=1)
    checked = len(rows)
    good = int(correct.sum())
    accuracy = good / checked if checked else 0.0
    required = REQUIRED_ACCURACY[accuracy_target]
    complete = len(indices) == model.qsl_total
    # every sample is compared where no reference picks rows; else the rest must be sound
    unfit = 0 if checked == len(indices) else len(indices) - int(finite.sum())
    passed = complete and accuracy >= required and not unfit
    notes = []
    if checked != len(indices):
        notes.append("%d of the %d logged samples checked" % (checked, len(indices)))
    if not complete:
        notes.append("only %d of %d samples were logged" % (len(indices), model.qsl_total))
    if unfit:
        notes.append(
            "%d logged outputs are not finite or not of %d values" % (unfit, model.outputs)
        )
    result = {
        "checked_samples": checked,
        "logged_samples": len(indices),
        "expected_samples": model.qsl_total,
        "within_tolerance": good,
        "accuracy": round(accuracy, 6),
        "required": required,
        "tolerance": tolerance,
        "largest_relative_error": float(np.nanmax(errors)) if len(rows) else None,
        "reference": what,
        "passed": passed,
    }
    verdict = "PASS" if passed else "FAIL"
    text = (
        "accuracy=%.4f%% (%d of %d samples within relative tolerance %g of the float64 reference; "
        "target %s%% needs %.1f%%%s): %s\n"
        % (
            accuracy * 100,
            good,
            checked,
            tolerance,
            accuracy_target,
            required * 100,
            "".join("; " + note for note in notes),
            verdict,
        )
    )
    with open(os.path.join(log_dir, ACCURACY_FILE), "w", encoding="utf-8") as handle:
        handle.write(text)
    result["summary"] = text.strip()
    return result
