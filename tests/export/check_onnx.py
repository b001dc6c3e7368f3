#!/usr/bin/env python3
"""onnxruntime, the runtime users load ctrain's ONNX files with, as an independent checker.

Usage: check_onnx.py MODEL.onnx INPUT.f32 EXPECTED.f32 TOLERANCE DIM...
INPUT.f32 and EXPECTED.f32 are raw little-endian float32 (LibTorch's input batch and its
outputs); DIM... is the input's shape. Runs the model on the CPU, prints
{"max_abs_diff": d, "shape": [...]} and exits 0 when every output is within TOLERANCE of
LibTorch's, 1 when one is not, 2 when onnxruntime cannot load or run the file.
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inp, expected, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    shape = [int(d) for d in sys.argv[5:]]
    x = np.fromfile(inp, dtype="<f4").reshape(shape)
    want = np.fromfile(expected, dtype="<f4")
    try:
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as e:  # onnxruntime raises its own types; any of them means "not loadable"
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 2
    if got.size != want.size:
        print(json.dumps({"error": f"{got.size} outputs, LibTorch gave {want.size}"}))
        return 1
    diff = float(np.max(np.abs(got.reshape(-1).astype(np.float64) - want.astype(np.float64))))
    print(json.dumps({"max_abs_diff": diff, "shape": list(got.shape)}))
    return 0 if diff <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
