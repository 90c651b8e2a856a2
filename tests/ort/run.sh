#!/usr/bin/env bash
# Export octet-quantized digits_cnn and resnet8 as QDQ and QOperator ONNX and run them in
# onnxruntime (installed from PyPI into target/ortvenv), comparing with octet's outputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/ortvenv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime onnx numpy
fi
octet=target/release/octet
out=target/ort-check
mkdir -p "$out"
for spec in digits_cnn:digits_calib:digits_test resnet8:resnet8_inputs:resnet8_inputs; do
  IFS=: read -r model calib data <<< "$spec"
  for fmt in qdq qoperator; do
    "$octet" export "tests/fixtures/$model.onnx" --calib "tests/fixtures/$calib.npz" --format "$fmt" -o "$out/$model.$fmt.onnx" > /dev/null
    "$octet" run "$out/$model.$fmt.onnx" --input "tests/fixtures/$data.npz" -o "$out/$model.$fmt.npz" > /dev/null 2>&1
    "$venv/bin/python" tests/ort/check_exports.py "$out/$model.$fmt.onnx" "tests/fixtures/$data.npz" "$out/$model.$fmt.npz"
  done
done
# Dynamic quantization (every MatMul, attention's two run-time operands included): float
# outputs, compared within 1e-3 of the output's largest magnitude (the float ops between the
# integer GEMMs differ in the last bits between runtimes).
"$octet" quantize tests/fixtures/tiny_bert.onnx --approach dynamic -o "$out/tiny_bert.dynamic.onnx" > /dev/null
"$octet" run "$out/tiny_bert.dynamic.onnx" --input tests/fixtures/tiny_bert_inputs.npz -o "$out/tiny_bert.dynamic.npz" > /dev/null 2>&1
"$venv/bin/python" tests/ort/check_exports.py "$out/tiny_bert.dynamic.onnx" tests/fixtures/tiny_bert_inputs.npz "$out/tiny_bert.dynamic.npz" --rel 1e-3

