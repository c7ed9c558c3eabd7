#!/usr/bin/env bash
# Trust figures (docs/RESULTS.md "Trust"): cold starts through the node's place tracker and single-image wrong
# poses, learned maps (depth points), on the office scene at the generator's default sizes and the four benchmark
# scenes at tools/eval_synthetic.sh's sizes; with odometry (as in the bags) and without.
# Usage: tools/eval_trust.sh [OUT=data/trust] [SCENES="office-default office corridor hall storage"]
# Writes OUT/<scene>-{odom,noodom}.json and prints each run's tables. About 1 h on 2 cores.
set -euo pipefail
OUT=${1:-data/trust}
SCENES=${2:-"office-default office corridor hall storage"}
RELOC=${RELOC:-reloc}
mkdir -p "$OUT"
for s in $SCENES; do
  scene=${s%-default}
  sizes="--n-map 300 --n-query 150"
  [ "$s" != "$scene" ] && sizes=""  # office-default: the generator's default sizes (1000 / 2 x 500 frames)
  $RELOC data synth --scene "$scene" --out "$OUT/$s" $sizes --reuse --quiet
  $RELOC -q map build --dataset "$OUT/$s" --format 7scenes --extractor learned --points depth \
    --out "$OUT/map-$s" --reuse
  for mode in odom noodom; do
    extra=""; [ $mode = noodom ] && extra="--no-odometry"
    echo "== $s ($mode)"
    $RELOC -q eval --map "$OUT/map-$s" --dataset "$OUT/$s" --format 7scenes --track $extra \
      --json "$OUT/$s-$mode.json"
  done
done
