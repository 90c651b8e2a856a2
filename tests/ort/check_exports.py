#!/usr/bin/env python3
"""Run octet-exported ONNX models in onnxruntime and compare with octet's own outputs.

usage: check_exports.py MODEL.onnx INPUTS.npz OCTET_OUT.npz [--rel TOL]
Passes when onnxruntime loads and runs the model and every output is within one output
quantization step (the scale of the DequantizeLinear that produces it) of octet's; with --rel
(float outputs, e.g. dynamic quantization) within TOL times the output's largest magnitude."""
import sys
import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort

model, inputs, octet_out = sys.argv[1], sys.argv[2], sys.argv[3]
rel = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--rel" else None
m = onnx.load(model)
inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
producer = {o: n for n in m.graph.node for o in n.output}

def step(name):
    n = producer.get(name)
    while n is not None and n.op_type == "Identity":
        n = producer.get(n.input[0])
    if n is None or n.op_type != "DequantizeLinear":
        sys.exit(f"{model}: output {name} is not produced by a DequantizeLinear")
    return float(np.max(inits[n.input[1]]))

so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
data = np.load(inputs)
outs = sess.run(None, {i.name: data[i.name] for i in sess.get_inputs()})
ref = np.load(octet_out)
ok = True
for o, v in zip(sess.get_outputs(), outs):
    s = step(o.name) if rel is None else rel * float(np.max(np.abs(ref[o.name])))
    d = float(np.max(np.abs(v.astype(np.float64) - ref[o.name].astype(np.float64))))
    good = d <= s * 1.0001 + 1e-7
    ok &= good
    print(f"{model}: onnxruntime {ort.__version__} vs octet, output {o.name}: max abs diff {d:.3e} = {d / s:.2f} {'quantization steps' if rel is None else 'x the allowed difference'} -> {'OK' if good else 'FAIL'}")
sys.exit(0 if ok else 1)
