#!/usr/bin/env bash
# Generate the four synthetic benchmark scenes, build a map per extractor from the mapping run (depth points),
# and evaluate both query runs (same light, light change).
# Usage: tools/eval_synthetic.sh [OUT=data/synth] [N_MAP=300] [N_QUERY=150] [EXTRACTORS="sift learned"]
set -euo pipefail
OUT=${1:-data/synth}
N_MAP=${2:-300}
N_QUERY=${3:-150}
EXTRACTORS=${4:-"sift learned"}
RELOC=${RELOC:-reloc}
mkdir -p "$OUT"
for scene in office corridor hall storage; do
  echo "== $scene"
  $RELOC data synth --scene "$scene" --out "$OUT/$scene" --n-map "$N_MAP" --n-query "$N_QUERY" --reuse --quiet
  for ex in $EXTRACTORS; do
    $RELOC -q map build --dataset "$OUT/$scene" --format 7scenes --extractor "$ex" --points depth \
      --out "$OUT/map-$scene-$ex" --reuse
    $RELOC -q eval --map "$OUT/map-$scene-$ex" --dataset "$OUT/$scene" --format 7scenes \
      --json "$OUT/$scene-$ex.json"
  done
done
