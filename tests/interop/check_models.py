#!/usr/bin/env python3
"""Checks models pare wrote against their originals with the reference tools.

    python check_models.py ORIGINAL NEW [ORIGINAL NEW ...]

For each pair: NEW passes onnx.checker.check_model(full_check=True), runs in onnxruntime, has
the same input names and output names as ORIGINAL, and gives outputs of the same shapes, all
finite, on seeded random inputs. Exits 1 on any failure.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)


def feed_for(sess, seed=0):
    rng = np.random.default_rng(seed)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
        if "float" in i.type:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feed[i.name] = rng.integers(0, 4, shape).astype(np.int64)
    return feed


def check(orig, new):
    onnx.checker.check_model(new, full_check=True)
    s0 = ort.InferenceSession(orig, providers=["CPUExecutionProvider"])
    s1 = ort.InferenceSession(new, providers=["CPUExecutionProvider"])
    if [i.name for i in s0.get_inputs()] != [i.name for i in s1.get_inputs()]:
        return "input names differ"
    if [o.name for o in s0.get_outputs()] != [o.name for o in s1.get_outputs()]:
        return "output names differ"
    feed = feed_for(s0)
    a, b = s0.run(None, feed), s1.run(None, feed)
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return f"output shape {y.shape} != {x.shape}"
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            return "non-finite outputs"
    return None


def main(argv):
    pairs = list(zip(argv[0::2], argv[1::2]))
    failed = 0
    for orig, new in pairs:
        try:
            why = check(orig, new)
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {e}"
        print(f"{new}: {'ok' if why is None else 'FAIL ' + why}")
        failed += why is not None
    print(f"models: {len(pairs) - failed} passed, {failed} failed")
    return 1 if failed or not pairs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
