#!/usr/bin/env bash
# The INT8 option against the float model: per scene, an INT8 copy calibrated on the scene's map images
# (`reloc quantize`), a map built with it, its queries evaluated with it (docs/RESULTS.md "INT8 option").
# Usage: tools/eval_int8.sh SYNTH_DIR STRECHA_DIR OUT
#   SYNTH_DIR: folder with the generated office, corridor, hall, storage scenes (`reloc data synth --scene S`)
# Environment: RELOC (the reloc command).
set -euo pipefail
SYNTH=$1; STRECHA=$2; OUT=$3
RELOC=${RELOC:-reloc}
mkdir -p "$OUT"
for s in office corridor hall storage; do
  $RELOC -q quantize --dataset "$SYNTH/$s" --format 7scenes --out "$OUT/$s-int8.onnx" > "$OUT/$s-q.json"
  $RELOC -q map build --dataset "$SYNTH/$s" --format 7scenes --extractor learned --model "$OUT/$s-int8.onnx" \
    --out "$OUT/map-$s" --overwrite
  $RELOC -q eval --map "$OUT/map-$s" --dataset "$SYNTH/$s" --format 7scenes --model "$OUT/$s-int8.onnx" \
    --json "$OUT/$s-learned.json"
done
for s in fountain-P11 Herz-Jesus-P25 castle-P30; do
  $RELOC -q quantize --dataset "$STRECHA/$s" --format posed_images --map-every 4 --out "$OUT/$s-int8.onnx" > "$OUT/$s-q.json"
  $RELOC -q map build --dataset "$STRECHA/$s" --format posed_images --map-every 4 --extractor learned \
    --model "$OUT/$s-int8.onnx" --out "$OUT/$s-learned" --overwrite
  $RELOC -q eval --map "$OUT/$s-learned" --dataset "$STRECHA/$s" --format posed_images --map-every 4 \
    --model "$OUT/$s-int8.onnx" --json "$OUT/$s-learned.json"
done
