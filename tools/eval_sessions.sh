#!/usr/bin/env bash
# Multi-session maps (docs/RESULTS.md "Multi-session maps"): for each scene, sessions 0-2 at the benchmark sizes
# (reloc data synth --session), learned depth maps of sessions 0, 1 and 2, session 0 updated with session 1
# (reloc map update), the merge of sessions 0 and 1 (reloc map merge), the 3-session merge and the same pruned to
# one session's keyframe count (--max-keyframes); every map localizes the query runs of sessions 0, 1 and 2.
# Also: session 1's map moved by a known rigid transform, merged with --align auto (alignment error); the 3-session
# and pruned maps' cold-start study (reloc eval --track, with odometry) on the query runs of sessions 0 and 2, and every
# map's on session 2's (the night).
# Usage: tools/eval_sessions.sh [OUT=data/sessions] [SCENES="office corridor hall storage"]
# Environment: LOW_LIGHT=B builds the maps with --low-light-brightness B and localizes with low_light_brightness B
# (docs/robustness.md; use another OUT: the maps differ).
# Writes OUT/<scene>/*.json and prints the tables (tools/sessions_table.py). About 40 min per scene on 2 cores.
set -euo pipefail
OUT=${1:-data/sessions}
SCENES=${2:-"office corridor hall storage"}
RELOC=${RELOC:-reloc}
BUILD_LL=(); EVAL_LL=()
if [ "${LOW_LIGHT:-0}" != 0 ]; then
  mkdir -p "$OUT"; echo "low_light_brightness: $LOW_LIGHT" > "$OUT/low-light.yaml"
  BUILD_LL=(--low-light-brightness "$LOW_LIGHT"); EVAL_LL=(--config "$OUT/low-light.yaml")
fi
HERE=$(cd "$(dirname "$0")" && pwd)
for s in $SCENES; do
  D="$OUT/$s"; mkdir -p "$D"
  for k in 0 1 2; do
    $RELOC data synth --scene "$s" --session $k --out "$D/s$k" --n-map 300 --n-query 150 --reuse --quiet
    $RELOC -q map build --dataset "$D/s$k" --format 7scenes --extractor learned --points depth --out "$D/map-s$k" --reuse \
      "${BUILD_LL[@]}"
  done
  rm -rf "$D/map-s0+u1"; cp -r "$D/map-s0" "$D/map-s0+u1"          # a copy: update works in place
  /usr/bin/time -f "%e s" -o "$D/update-s1.time" $RELOC -q map update "$D/map-s0+u1" --dataset "$D/s1" --format 7scenes
  rm -rf "$D/map-s0+u1+u2"; cp -r "$D/map-s0+u1" "$D/map-s0+u1+u2"
  /usr/bin/time -f "%e s" -o "$D/update-s2.time" $RELOC -q map update "$D/map-s0+u1+u2" --dataset "$D/s2" --format 7scenes
  $RELOC -q map merge "$D/map-s0" "$D/map-s1" --out "$D/map-m01" --overwrite
  $RELOC -q map merge "$D/map-s0" "$D/map-s1" "$D/map-s2" --out "$D/map-m012" --overwrite
  n=$(python -c "from reloc_ros.core.mapdb import MapDatabase as M; print(len(M.load('$D/map-s0')))")
  $RELOC -q map merge "$D/map-s0" "$D/map-s1" "$D/map-s2" --out "$D/map-m012-b$n" --max-keyframes "$n" --overwrite
  rm -rf "$D/map-s1-moved"
  python "$HERE/move_map.py" "$D/map-s1" "$D/map-s1-moved" --yaw-deg 35 --pitch-deg 2 --t 3.0 -2.0 0.4
  $RELOC -q map merge "$D/map-s0" "$D/map-s1-moved" --out "$D/map-m01-moved" --overwrite
  for m in s0 s0+u1 m01 m012 m012-b$n; do
    for q in 0 1 2; do
      [ "$q" = 1 ] && [ "$m" != m012 ] && [ "$m" != "m012-b$n" ] && continue   # session 1 queries: budget study only
      # cold starts through the tracker (odometry): the 3-session maps on the day and night queries, every map at night
      track=""; { [ "$q" = 2 ] || { [ "$q" = 0 ] && [[ "$m" == m012* ]]; }; } && track="--track"
      $RELOC -q eval --map "$D/map-$m" --dataset "$D/s$q" --format 7scenes $track "${EVAL_LL[@]}" \
        --json "$D/eval-$m-q$q.json" > /dev/null
    done
  done
done
python "$HERE/sessions_table.py" "$OUT" $SCENES
