#!/usr/bin/env python3
"""Checks pieces written by `pare extract` / `pare split` with onnx and onnxruntime.

    extract_check.py pieces TOL DIR...         DIR/sub.onnx + DIR/test_data_set_0: onnx.checker
                                               (full_check), ORT run on input_K.pb, outputs vs
                                               output_K.pb (max abs diff <= TOL)
    extract_check.py run MODEL...              onnx.checker (full_check) + ORT run on random inputs
    extract_check.py split TOL ORIG HEAD TAIL [ORIG HEAD TAIL...]
                                               ORT: HEAD then TAIL (fed by name) equals ORIG

Prints one line per failure and a summary line "N passed, M failed"; exits 1 on any failure.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ort.set_default_logger_severity(3)


def session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def random_feed(sess, rng):
    feed = {}
    for i in sess.get_inputs():
        shp = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        if "float" in i.type:
            feed[i.name] = rng.standard_normal(shp).astype(np.float32)
        elif "bool" in i.type:
            feed[i.name] = rng.integers(0, 2, shp).astype(np.bool_)
        else:
            feed[i.name] = rng.integers(0, 4, shp).astype(np.int64 if "64" in i.type else np.int32)
    return feed


def check_piece(d, tol):
    path = os.path.join(d, "sub.onnx")
    onnx.checker.check_model(path, full_check=True)
    sess = session(path)
    tds = os.path.join(d, "test_data_set_0")
    feed = {}
    for k, inp in enumerate(sess.get_inputs()):
        name, arr = load_pb(os.path.join(tds, f"input_{k}.pb"))
        if name != inp.name:
            return f"input_{k}.pb holds '{name}', ORT's input {k} is '{inp.name}'"
        feed[inp.name] = arr
    outs = sess.run(None, feed)
    for k, (o, r) in enumerate(zip(sess.get_outputs(), outs)):
        name, ref = load_pb(os.path.join(tds, f"output_{k}.pb"))
        if name != o.name:
            return f"output_{k}.pb holds '{name}', ORT's output {k} is '{o.name}'"
        if r.shape != ref.shape or r.dtype != ref.dtype:
            return f"output {o.name}: ORT {r.dtype}{list(r.shape)} vs stored {ref.dtype}{list(ref.shape)}"
        if r.size:
            diff = float(np.max(np.abs(r.astype(np.float64) - ref.astype(np.float64))))
            if not diff <= tol:
                return f"output {o.name}: max abs diff {diff:.3g} > {tol}"
    return None


def check_run(path):
    onnx.checker.check_model(path, full_check=True)
    sess = session(path)
    sess.run(None, random_feed(sess, np.random.default_rng(0)))
    return None


def check_split(orig, head, tail, tol):
    for p in (head, tail):
        onnx.checker.check_model(p, full_check=True)
    so, sh, st = session(orig), session(head), session(tail)
    feed = random_feed(so, np.random.default_rng(1))
    want = dict(zip([o.name for o in so.get_outputs()], so.run(None, feed)))
    values = dict(feed)
    values.update(zip([o.name for o in sh.get_outputs()], sh.run(None, {i.name: values[i.name] for i in sh.get_inputs()})))
    values.update(zip([o.name for o in st.get_outputs()], st.run(None, {i.name: values[i.name] for i in st.get_inputs()})))
    for name, w in want.items():
        if name not in values:
            return f"HEAD then TAIL does not compute '{name}'"
        g = values[name]
        if g.shape != w.shape:
            return f"'{name}': shape {g.shape} vs {w.shape}"
        if w.size and not float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) <= tol:
            return f"'{name}' differs"
    return None


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    jobs = []
    if mode == "pieces":
        tol = float(args[0])
        jobs = [(d, lambda d=d: check_piece(d, tol)) for d in args[1:]]
    elif mode == "run":
        jobs = [(p, lambda p=p: check_run(p)) for p in args]
    elif mode == "split":
        tol = float(args[0])
        rest = args[1:]
        jobs = [(rest[k + 1], lambda k=k: check_split(rest[k], rest[k + 1], rest[k + 2], tol)) for k in range(0, len(rest), 3)]
    passed = failed = 0
    for what, job in jobs:
        try:
            why = job()
        except Exception as ex:  # noqa: BLE001
            why = f"{type(ex).__name__}: {str(ex)[:300]}"
        if why:
            failed += 1
            print(f"FAIL {what}: {why}")
        else:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
