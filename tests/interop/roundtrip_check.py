#!/usr/bin/env python3
"""Checks pare's re-saved models against the originals with the reference tools.

    python roundtrip_check.py ORIGINAL SAVED [ORIGINAL SAVED ...]

For each pair: the protobuf messages are equal field by field (proto2 presence included, with
external data loaded), the saved file passes onnx.checker.check_model(full_check=True), and
onnxruntime gives bit-identical outputs on seeded random inputs. Exits 1 on any failure.
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
        # Symbolic dims: batch 1, others 64 (a 1x1 image is too small for real models).
        shape = [d if isinstance(d, int) and d > 0 else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
        if "float" in i.type:
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feed[i.name] = rng.integers(0, 4, shape).astype(np.int64)
    return feed


def normalise(m):
    """onnx.load marks tensors it read from external files as data_location=DEFAULT
    explicitly; clear that so presence matches a file that never had external data."""
    def graph(g):
        tensors = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.HasField("t")]
        for t in tensors:
            if t.HasField("data_location") and t.data_location == onnx.TensorProto.DEFAULT:
                t.ClearField("data_location")
        for n in g.node:
            for a in n.attribute:
                if a.HasField("g"):
                    graph(a.g)
                for sg in a.graphs:
                    graph(sg)
    graph(m.graph)
    return m


def check(orig, saved):
    a = normalise(onnx.load(orig))
    b = normalise(onnx.load(saved))
    if a != b:
        # Name the first differing node to make failures actionable.
        for x, y in zip(a.graph.node, b.graph.node):
            if x != y:
                return f"node {x.name} differs after round trip"
        return "messages differ after round trip"
    onnx.checker.check_model(saved, full_check=True)
    s0 = ort.InferenceSession(orig, providers=["CPUExecutionProvider"])
    s1 = ort.InferenceSession(saved, providers=["CPUExecutionProvider"])
    feed = feed_for(s0)
    for x, y in zip(s0.run(None, feed), s1.run(None, feed)):
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            return "onnxruntime outputs are not bit-identical"
    return None


def main(argv):
    pairs = list(zip(argv[0::2], argv[1::2]))
    failed = 0
    for orig, saved in pairs:
        try:
            why = check(orig, saved)
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {e}"
        print(f"{orig}: {'ok' if why is None else 'FAIL ' + why}")
        failed += why is not None
    print(f"roundtrip: {len(pairs) - failed} passed, {failed} failed")
    return 1 if failed or not pairs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
