#!/usr/bin/env python3
"""Dev-corpus check for `pare extract --from A --to B --with-data`: N random node ranges per model
(at most 40 nodes apart in file order); each piece must pass onnx.checker (full_check), run in
onnxruntime and reproduce the boundary outputs pare stored (max abs diff reported; ranges with no
path between A and B must be refused with exit 2, and are counted apart).

    python scripts/extract_ranges.py target/release/pare ../shared/models/dev 20
"""
import numpy as np, onnx, onnxruntime as ort
ort.set_default_logger_severity(3)
pare, D, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
man = json.load(open(os.path.join(D, "manifest.json")))["models"]
rnd = random.Random(11)
tot = ok = ok4 = refused = 0; worst = 0.0
for e in man:
    f = os.path.join(D, e["file"])
    m = onnx.load(f, load_external_data=False)
    names = [n.name for n in m.graph.node if n.name and n.op_type != "Constant"]
    for _ in range(per):
        i, j = sorted(rnd.sample(range(len(names)), 2))
        if j - i > 40: j = i + rnd.randint(1, 40)
        d = tempfile.mkdtemp(); out = os.path.join(d, "p.onnx")
        r = subprocess.run([pare, "extract", f, "--from", names[i], "--to", names[j], "-o", out, "--with-data"], capture_output=True, text=True)
        tot += 1
        if r.returncode == 2 and "is not downstream" in r.stderr:
            refused += 1; tot -= 1; continue
        if r.returncode != 0:
            print(e["file"], names[i], names[j], "rc", r.returncode, r.stderr.strip()[-200:]); continue
        try:
            onnx.checker.check_model(out, full_check=True)
            s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
            tds = os.path.join(d, "test_data_set_0"); feed = {}
            for k, inp in enumerate(s.get_inputs()):
                t = onnx.TensorProto(); t.ParseFromString(open(os.path.join(tds, f"input_{k}.pb"), "rb").read())
                feed[inp.name] = onnx.numpy_helper.to_array(t)
            res = s.run(None, feed); md = 0.0
            for k, x in enumerate(res):
                t = onnx.TensorProto(); t.ParseFromString(open(os.path.join(tds, f"output_{k}.pb"), "rb").read())
                y = onnx.numpy_helper.to_array(t)
                assert x.shape == y.shape, (x.shape, y.shape)
                if x.size and x.dtype.kind == 'f': md = max(md, float(np.max(np.abs(x.astype(np.float64) - y))))
                elif x.size: md = max(md, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
            worst = max(worst, md); ok += md <= 1e-5; ok4 += md <= 1e-4
            if md > 1e-5: print(e["file"], names[i], "->", names[j], f"max diff {md:.2e}")
        except Exception as ex:
            print(e["file"], names[i], names[j], "ERR", str(ex)[:200])
print(f"ranges: {ok}/{tot} within 1e-5, {ok4}/{tot} within 1e-4, worst {worst:.2e} ({refused} without a path, refused with exit 2)")
