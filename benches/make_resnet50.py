# Usage: python benches/make_resnet50.py OUTDIR  (needs numpy + onnx, e.g. the ../shared/bench peers venv)
# ResNet-50 (v1.5, BN folded into conv bias) with random He-initialised weights, built with onnx.helper
# (no torch available). Inputs/calibration: random N(0,1) images.
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
rng = np.random.default_rng(0)
nodes, inits = [], []
cnt = [0]
def name(p):
    cnt[0] += 1; return f"{p}{cnt[0]}"
def conv(x, cin, cout, k, s, relu=True):
    w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    wn, bn, y = name("w"), name("b"), name("conv")
    inits.append(numpy_helper.from_array(w, wn)); inits.append(numpy_helper.from_array(b, bn))
    nodes.append(helper.make_node("Conv", [x, wn, bn], [y], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4))
    if relu:
        r = name("relu"); nodes.append(helper.make_node("Relu", [y], [r])); return r
    return y
x = conv("input", 3, 64, 7, 2)
mp = name("pool"); nodes.append(helper.make_node("MaxPool", [x], [mp], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])); x = mp
cin = 64
for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
    for i in range(blocks):
        s = stride if i == 0 else 1
        y = conv(x, cin, width, 1, 1)
        y = conv(y, width, width, 3, s)
        y = conv(y, width, width * 4, 1, 1, relu=False)
        sc = conv(x, cin, width * 4, 1, s, relu=False) if i == 0 else x
        a = name("add"); nodes.append(helper.make_node("Add", [y, sc], [a]))
        r = name("relu"); nodes.append(helper.make_node("Relu", [a], [r])); x = r
        cin = width * 4
g = name("gap"); nodes.append(helper.make_node("GlobalAveragePool", [x], [g]))
f = name("flat"); nodes.append(helper.make_node("Flatten", [g], [f], axis=1))
w = (rng.standard_normal((1000, 2048)) * np.sqrt(1.0 / 2048)).astype(np.float32)
inits.append(numpy_helper.from_array(w, "fc_w")); inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b"))
nodes.append(helper.make_node("Gemm", [f, "fc_w", "fc_b"], ["logits"], transB=1))
graph = helper.make_graph(nodes, "resnet50", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1] + "/resnet50.onnx")
np.savez(sys.argv[1] + "/inputs.npz", input=rng.standard_normal((8, 3, 224, 224)).astype(np.float32))
print("ok")
