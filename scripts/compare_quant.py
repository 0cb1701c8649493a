#!/usr/bin/env python3
"""pare quantize vs onnxruntime quantize_static, side by side, measured in onnxruntime.

    python scripts/compare_quant.py MODEL [--pare target/release/pare] [--calib 32] [--eval 16]
                                    [--data random|images] [--images DIR] [--json OUT.jsonl]

Both tools get the same calibration samples (written once as .npy files); each quantized model
is then run in onnxruntime (CPU) on held-out inputs and compared with the float model:

- onnxruntime: quantize_static, QDQ, per-channel weights, each of MinMax, Entropy and
  Percentile (its best is what pare must match). Activations are uint8 (asymmetric) unless
  --ort-activation int8.
- pare: `pare quantize --format ort` (uint8 activations, like for like) and `--format trt`
  (symmetric int8, what TensorRT needs).

Every quantizer runs in its own process, so wall time and peak memory (max RSS) are its own.
SQNR = 10 log10(sum ref^2 / sum (ref - got)^2) over all held-out inputs, per output; the
table shows the worst output. `--data images` makes crops of the PNGs in --images (ImageNet
normalisation); the held-out crops come from different images than the calibration crops.

Without --pare only onnxruntime runs: that is the interface pare_eval.py expects from
$PARE_PEER_QUANT (`MODEL --calib N --eval N --json PATH`, one JSON line with "methods").
Needs onnx, onnxruntime and numpy only.
"""
import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


# ---------------------------------------------------------------- data

def input_specs(model_path):
    import onnx

    m = onnx.load(model_path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    specs = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in i.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            sys.exit(f"{model_path}: input {i.name} has dynamic dims {dims}; this script needs static inputs")
        dims = [1 if d is None else d for d in dims]
        specs.append((i.name, dims))
    return specs


def read_png(path):
    """Minimal PNG decoder (8-bit gray, gray+alpha, RGB, RGBA; non-interlaced) -> HxWx3 uint8."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace != 0 or ctype not in (0, 2, 4, 6):
                raise ValueError(f"{path}: unsupported PNG (depth {depth}, type {ctype}, interlace {interlace})")
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    out = np.zeros((h, w * ch), np.int32)
    prev = np.zeros(w * ch, np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:
            cur = line.copy()
            for x in range(ch, w * ch, ch):  # left dependency: vectorise across channels only
                cur[x:x + ch] = (cur[x:x + ch] + cur[x - ch:x]) & 255
        elif f == 2:
            cur = (line + prev) & 255
        elif f == 3:
            cur = line.copy()
            cur[:ch] = (cur[:ch] + prev[:ch] // 2) & 255
            for x in range(ch, w * ch, ch):
                cur[x:x + ch] = (cur[x:x + ch] + (cur[x - ch:x] + prev[x:x + ch]) // 2) & 255
        else:
            cur = line.copy()
            for x in range(w * ch):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[x] = (cur[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y] = cur
        prev = cur
    img = out.reshape(h, w, ch).astype(np.uint8)
    if ch in (1, 2):
        img = np.repeat(img[:, :, :1], 3, axis=2)
    return img[:, :, :3]


def resize_bilinear(img, h, w):
    H, W = img.shape[:2]
    ys = (np.arange(h) + 0.5) * H / h - 0.5
    xs = (np.arange(w) + 0.5) * W / w - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, H - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, W - 1)
    y1, x1 = np.clip(y0 + 1, 0, H - 1), np.clip(x0 + 1, 0, W - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None, None]
    wx = np.clip(xs - x0, 0, 1)[None, :, None]
    f = img.astype(np.float32)
    top = f[y0][:, x0] * (1 - wx) + f[y0][:, x1] * wx
    bot = f[y1][:, x0] * (1 - wx) + f[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy


def image_crops(images, n, shape, seed):
    """n random crops (scale 0.35-1, flips) of `images`, ImageNet-normalised, NCHW."""
    rng = np.random.default_rng(seed)
    _, c, h, w = shape
    out = []
    for k in range(n):
        img = images[k % len(images)]
        H, W = img.shape[:2]
        s = rng.uniform(0.35, 1.0)
        ch, cw = max(8, int(H * s)), max(8, int(W * s * rng.uniform(0.8, 1.25)))
        ch, cw = min(ch, H), min(cw, W)
        y, x = rng.integers(0, H - ch + 1), rng.integers(0, W - cw + 1)
        crop = img[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        t = (resize_bilinear(crop, h, w) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        out.append(t.transpose(2, 0, 1)[None].astype(np.float32))
    return out


def make_data(specs, args, root):
    """Writes calib/ and eval/ .npy samples (one subfolder per input when several)."""
    sets = {}
    if args.data == "images":
        if len(specs) != 1 or len(specs[0][1]) != 4:
            sys.exit("--data images needs a single NCHW image input")
        pngs = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(args.images) for f in fs if f.lower().endswith(".png"))
        if len(pngs) < 2:
            sys.exit(f"--images {args.images}: need at least two PNG files")
        imgs = [read_png(p) for p in pngs]
        # Held-out crops come from other images than the calibration crops.
        k = max(1, len(imgs) // 3)
        sets["calib"] = {specs[0][0]: image_crops(imgs[k:], args.calib, specs[0][1], 0)}
        sets["eval"] = {specs[0][0]: image_crops(imgs[:k], args.eval, specs[0][1], 1)}
    else:
        for name, n, seed in (("calib", args.calib, 0), ("eval", args.eval, 1)):
            rng = np.random.default_rng(seed)
            sets[name] = {i: [rng.standard_normal(s).astype(np.float32) for _ in range(n)] for i, s in specs}
    dirs = {}
    for name, per_input in sets.items():
        d = os.path.join(root, name)
        for inp, arrays in per_input.items():
            sub = os.path.join(d, inp) if len(specs) > 1 else d
            os.makedirs(sub, exist_ok=True)
            for k, a in enumerate(arrays):
                np.save(os.path.join(sub, f"{k:04d}.npy"), a)
        dirs[name] = d
    return dirs, sets


# ---------------------------------------------------------------- quantizers

def ort_worker(model, calib_dir, method, out, act):
    """Runs in its own process: quantize_static, prints wall time and max RSS."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    specs = input_specs(model)

    class Reader(CalibrationDataReader):
        def __init__(self):
            if len(specs) == 1:
                files = [[os.path.join(calib_dir, f)] for f in sorted(os.listdir(calib_dir))]
            else:
                lists = [sorted(os.listdir(os.path.join(calib_dir, n))) for n, _ in specs]
                files = [[os.path.join(calib_dir, n, l[k]) for (n, _), l in zip(specs, lists)] for k in range(len(lists[0]))]
            self.it = iter(files)

        def get_next(self):
            f = next(self.it, None)
            return None if f is None else {n: np.load(p) for (n, _), p in zip(specs, f)}

    t = time.time()
    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if act == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method))
    wall = time.time() - t
    print(json.dumps({"wall_s": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


MEM_LIMIT_GB = 14.0


def _limit_memory():
    # A histogram calibrator that keeps every activation can take the whole machine down
    # (onnxruntime issue 10503): cap the address space so it fails alone.
    lim = int(MEM_LIMIT_GB * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def run_measured(cmd, timeout):
    """Runs cmd (under the memory cap); returns (rc, stdout, stderr, wall, peak MB)."""
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_limit_memory)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return 124, out, "timeout", time.time() - t, float("nan")
    wall = time.time() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return p.returncode, out, err, wall, peak


def quantize_ort(model, calib_dir, method, out, act, timeout):
    rc, so, err, wall, _ = run_measured([sys.executable, os.path.abspath(__file__), "--_ort-worker", model, calib_dir,
                                         method, out, act], timeout)
    if rc != 0:
        oom = rc in (-9, 137) or "MemoryError" in err or "bad_alloc" in err or "Failed to allocate" in err
        status = "timeout" if rc == 124 else (f"out of memory (>{MEM_LIMIT_GB:g} GB)" if oom else f"failed rc={rc}")
        return {"status": status, "error": err.strip().splitlines()[-1][:300] if err.strip() else ""}
    j = json.loads(so.strip().splitlines()[-1])
    return {"status": "ok", "wall_s": j["wall_s"], "process_s": wall, "peak_mb": j["peak_mb"]}


def quantize_pare(pare, model, calib_dir, n, fmt, out, timeout, extra):
    # /usr/bin/time-free peak memory: a tiny wrapper process reports its child's max RSS.
    wrapper = ("import resource,subprocess,sys,json,time;t=time.time();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
               "sys.stdout.write(p.stdout);sys.stderr.write(p.stderr);"
               "print(json.dumps({'__rc':p.returncode,'__wall':time.time()-t,"
               "'__peak_mb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024}))")
    cmd = [sys.executable, "-c", wrapper, pare, "quantize", model, "-o", out, "--calib", calib_dir, "--samples", str(n),
           "--format", fmt, "--json"] + extra
    rc, so, err, _, _ = run_measured(cmd, timeout)
    lines = so.strip().splitlines()
    try:
        meta = json.loads(lines[-1])
        report = json.loads("\n".join(lines[:-1]))
    except (ValueError, IndexError):
        return {"status": f"failed rc={rc}", "error": err.strip()[-300:]}
    if meta["__rc"] != 0:
        return {"status": f"failed rc={meta['__rc']}", "error": err.strip()[-300:]}
    return {"status": "ok", "wall_s": meta["__wall"], "peak_mb": meta["__peak_mb"],
            "calibration_s": report.get("calibration_seconds"), "pare_reported_sqnr_db": report.get("output_sqnr_db"),
            "quantized_layers": report.get("quantized_layers"), "float_layers": report.get("float_layers")}


# ---------------------------------------------------------------- evaluation

def evaluate(model, quantized, eval_set):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    f = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(quantized, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in f.get_outputs()]
    n = len(next(iter(eval_set.values())))
    sig = {o: 0.0 for o in names}
    noise = {o: 0.0 for o in names}
    mx = 0.0
    for k in range(n):
        feed = {i: v[k] for i, v in eval_set.items()}
        a, b = f.run(None, feed), q.run(None, feed)
        for o, x, y in zip(names, a, b):
            if not np.issubdtype(x.dtype, np.floating):
                continue
            x, y = x.astype(np.float64), y.astype(np.float64)
            sig[o] += float((x * x).sum())
            noise[o] += float(((x - y) ** 2).sum())
            mx = max(mx, float(np.abs(x - y).max()))
    per = {o: 10 * np.log10(sig[o] / max(noise[o], 1e-30)) for o in names if sig[o] > 0}
    total = 10 * np.log10(sum(sig.values()) / max(sum(noise.values()), 1e-30))
    return {"sqnr_db": total, "sqnr_db_min": min(per.values()), "per_output_db": per, "max_abs_err": mx}


# ---------------------------------------------------------------- main

def main():
    global MEM_LIMIT_GB
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--pare", help="pare binary; without it only onnxruntime runs")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--data", choices=["random", "images"], default="random")
    ap.add_argument("--images", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "images"))
    ap.add_argument("--methods", default="MinMax,Entropy,Percentile")
    ap.add_argument("--ort-activation", choices=["uint8", "int8"], default="uint8")
    ap.add_argument("--pare-formats", default="ort,trt")
    ap.add_argument("--pare-args", default="", help="extra pare quantize arguments (space separated)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--mem-limit-gb", type=float, default=MEM_LIMIT_GB, help="address-space cap per quantizer process")
    ap.add_argument("--json", help="append one JSON line with every result")
    ap.add_argument("--keep", help="keep the data and quantized models in this folder")
    args = ap.parse_args()

    MEM_LIMIT_GB = args.mem_limit_gb
    model = os.path.abspath(args.model)
    specs = input_specs(model)
    root = args.keep or tempfile.mkdtemp(prefix="compare_quant_")
    os.makedirs(root, exist_ok=True)
    dirs, sets = make_data(specs, args, root)
    eval_set = sets["eval"]
    name = os.path.basename(model)
    rows, methods, pare_res = [], {}, {}
    for m in [x for x in args.methods.split(",") if x]:
        out = os.path.join(root, f"ort_{m}.onnx")
        r = quantize_ort(model, dirs["calib"], m, out, args.ort_activation, args.timeout)
        if r["status"] == "ok":
            r.update(evaluate(model, out, eval_set))
        methods[m] = r
        rows.append((f"onnxruntime {m} ({args.ort_activation})", r))
    if args.pare:
        for fmt in [x for x in args.pare_formats.split(",") if x]:
            out = os.path.join(root, f"pare_{fmt}.onnx")
            r = quantize_pare(os.path.abspath(args.pare), model, dirs["calib"], args.calib, fmt, out, args.timeout,
                              args.pare_args.split())
            if r["status"] == "ok":
                r.update(evaluate(model, out, eval_set))
            pare_res[fmt] = r
            rows.append((f"pare --format {fmt}", r))

    print(f"\n{name}: {args.calib} calibration samples, {args.eval} held-out ({args.data}), measured in onnxruntime")
    print(f"{'quantizer':<34} {'SQNR dB':>8} {'max err':>9} {'wall s':>8} {'calib s':>8} {'peak MB':>8}  status")
    for label, r in rows:
        if r["status"] != "ok":
            print(f"{label:<34} {'-':>8} {'-':>9} {'-':>8} {'-':>8} {'-':>8}  {r['status']} {r.get('error', '')[:80]}")
            continue
        cal = r.get("calibration_s")
        print(f"{label:<34} {r['sqnr_db_min']:>8.2f} {r['max_abs_err']:>9.4f} {r['wall_s']:>8.1f} "
              f"{(f'{cal:.1f}' if cal is not None else '-'):>8} {r['peak_mb']:>8.0f}  ok")
    oks = {k: v for k, v in methods.items() if v["status"] == "ok"}
    if oks and pare_res:
        best = max(oks, key=lambda k: oks[k]["sqnr_db_min"])
        print(f"onnxruntime best: {best} {oks[best]['sqnr_db_min']:.2f} dB")
        for fmt, r in pare_res.items():
            if r["status"] == "ok":
                d = r["sqnr_db_min"] - oks[best]["sqnr_db_min"]
                print(f"pare --format {fmt}: {d:+.2f} dB vs onnxruntime best")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"model": name, "calib": args.calib, "eval": args.eval, "data": args.data,
                                "methods": methods, "pare": pare_res}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_ort-worker":
        ort_worker(*sys.argv[2:7])
    else:
        main()
