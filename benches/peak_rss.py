#!/usr/bin/env python3
"""Peak resident memory while running: octet against ONNX Runtime on the same model.

Each runtime runs in its own fresh process (load, compile, warm up, ITERS runs); the figure is
that process's peak RSS (`ru_maxrss`), so nothing of the other runtime or of this script counts.
ONNX Runtime runs its own int8 model (quantize_static QDQ per-channel, or quantize_dynamic, as
`../shared/bench/peers.py` makes it); octet runs an already-quantized model (`octet quantize`'s
output), so octet's figure does not include calibration either.

    python benches/peak_rss.py FP32_MODEL --octet-model Q.onnx --inputs X.npz [--calib C.npz]
        [--dynamic] [--threads 1] [--octet target/release/octet]

Run it with the peers' Python (`../shared/bench/setup.sh`), e.g. `~/.cache/octet-peers/bin/python`.
"""
import argparse, json, os, subprocess, sys, tempfile

ORT_CHILD = r"""
import sys, resource, numpy as np, onnxruntime as ort
model, inputs, threads, iters = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
feeds = {k: v[:1] for k, v in np.load(inputs).items()}
o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
names = {i.name for i in s.get_inputs()}
feeds = {k: v for k, v in feeds.items() if k in names}
for _ in range(iters): s.run(None, feeds)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def child_peak_kib(cmd):
    """Runs cmd under GNU time; returns its peak RSS in KiB. (Not this process's own wait4
    figures: Linux keeps the high-water mark across fork and exec, so a child of this large
    Python process would start at its RSS; GNU time's child is forked from the small `time`.)"""
    p = subprocess.run(["/usr/bin/time", "-f", "PEAK_KIB=%M"] + cmd, capture_output=True,
                       text=True)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{p.stderr}")
    kib = [l for l in p.stderr.splitlines() if l.startswith("PEAK_KIB=")][-1]
    return int(kib.split("=")[1]), p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--octet-model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--calib")
    ap.add_argument("--dynamic", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--octet", default="target/release/octet")
    a = ap.parse_args()

    import numpy as np
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    tmp = tempfile.mkdtemp()
    q = os.path.join(tmp, "q.onnx")
    if a.dynamic:
        quantize_dynamic(a.model, q, weight_type=QuantType.QInt8)
    else:
        cal = dict(np.load(a.calib or a.inputs))
        n = len(next(iter(cal.values())))
        items = iter([{k: v[i:i + 1] for k, v in cal.items()} for i in range(n)])

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(items, None)

        quantize_static(a.model, q, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
    res = {"model": os.path.basename(a.model), "threads": a.threads, "iters": a.iters}
    ort_kib, _ = child_peak_kib([sys.executable, "-c", ORT_CHILD, q, a.inputs,
                                 str(a.threads), str(a.iters)])
    octet_kib, _ = child_peak_kib([a.octet, "bench", a.octet_model, "--input", a.inputs,
                                   "--threads", str(a.threads), "--iters", str(a.iters),
                                   "--warmup", "1"])
    # The interpreter and onnxruntime's import alone, for context.
    base_kib, _ = child_peak_kib([sys.executable, "-c",
                                  "import resource, numpy, onnxruntime; "
                                  "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"])
    res.update(ort_peak_mib=ort_kib / 1024, octet_peak_mib=octet_kib / 1024,
               python_ort_import_mib=base_kib / 1024, octet_over_ort=octet_kib / ort_kib)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
