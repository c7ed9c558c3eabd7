#!/usr/bin/env bash
# Build a map per Strecha scene (every 4th image, triangulated points) and evaluate the other images.
# Usage: tools/eval_strecha.sh [EXTRACTOR=sift] [DATA=../shared/data/strecha] [OUT=data/strecha]
# Environment: RELOC (the reloc command), MAX_SIDE (extractor resolution, `reloc map build --max-side`; default 1024).
set -euo pipefail
EXTRACTOR=${1:-sift}
DATA=${2:-$(dirname "$0")/../../shared/data/strecha}
OUT=${3:-data/strecha}
RELOC=${RELOC:-reloc}
SIDE_ARGS=()
if [ -n "${MAX_SIDE:-}" ]; then SIDE_ARGS=(--max-side "$MAX_SIDE"); fi
mkdir -p "$OUT"
for scene in fountain-P11 Herz-Jesus-P25 castle-P30; do
  echo "== $scene ($EXTRACTOR)"
  $RELOC -q map build --dataset "$DATA/$scene" --format posed_images --map-every 4 --extractor "$EXTRACTOR" \
    "${SIDE_ARGS[@]}" --out "$OUT/$scene-$EXTRACTOR" --reuse
  $RELOC -q eval --map "$OUT/$scene-$EXTRACTOR" --dataset "$DATA/$scene" --format posed_images --map-every 4 \
    --json "$OUT/$scene-$EXTRACTOR.json"
done
