#!/usr/bin/env python3
"""Checks models written by `pare fix` with the reference tools.

    python lint_check.py CASES.json

CASES.json lists {name, original, fixed, absent_ops, inputs, outputs} where inputs and outputs
are {name, shape, file} of raw little-endian float32 data (outputs: what tract computed on the
fixed model). For each case the fixed model must pass onnx.checker (full_check), hold none of
absent_ops, and onnxruntime must give the same outputs (allclose, atol=rtol=1e-5) on the
original, on the fixed model, and as tract did on the fixed model. Exits 1 on any failure.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)


def load(entry):
    return np.fromfile(entry["file"], dtype=np.float32).reshape(entry["shape"])


def main():
    cases = json.load(open(sys.argv[1]))
    ok = bad = 0
    for c in cases:
        why = []
        try:
            onnx.checker.check_model(c["fixed"], full_check=True)
            fixed = onnx.load(c["fixed"])
            ops = {n.op_type for n in fixed.graph.node}
            for op in c["absent_ops"]:
                if op in ops:
                    why.append(f"{op} still present")
            feed = {i["name"]: load(i) for i in c["inputs"]}
            s0 = ort.InferenceSession(c["original"], providers=["CPUExecutionProvider"])
            s1 = ort.InferenceSession(c["fixed"], providers=["CPUExecutionProvider"])
            a = s0.run(None, feed)
            b = s1.run(None, feed)
            tract = [load(o) for o in c["outputs"]]
            for k, (x, y, t) in enumerate(zip(a, b, tract)):
                if x.shape != y.shape or not np.allclose(x, y, atol=1e-5, rtol=1e-5):
                    why.append(f"output {k}: onnxruntime original vs fixed differ (max {np.max(np.abs(x - y)) if x.shape == y.shape else 'shape'})")
                if x.shape != t.shape or not np.allclose(x, t, atol=1e-5, rtol=1e-5):
                    why.append(f"output {k}: onnxruntime original vs tract fixed differ ({x.shape} vs {t.shape})")
        except Exception as e:  # noqa: BLE001
            why.append(f"{type(e).__name__}: {str(e)[:300]}")
        if why:
            bad += 1
            print(f"FAIL {c['name']}: {'; '.join(why)}")
        else:
            ok += 1
            print(f"ok   {c['name']}")
    print(f"{ok} passed, {bad} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
