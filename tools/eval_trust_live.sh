#!/usr/bin/env bash
# The live node started cold in the middle of recordings (docs/RESULTS.md "Trust"): `reloc eval-bag --live
# --start-frame K` on both query bags of a scene made with --bag, at several start frames, with the bags' odometry
# (and, with NO_ODOM=1, as tf_mode map_base without it). Prints one line per run: published poses, wrong ones.
# Usage: tools/eval_trust_live.sh DATA MAP OUT "K1 K2 ..."   (DATA: a `reloc data synth --bag` folder)
set -euo pipefail
DATA=$1; MAP=$2; OUT=$3; STARTS=${4:-"0 25 50 75 100"}
RELOC=${RELOC:-reloc}
EXTRA=()
if [ -n "${NO_ODOM:-}" ]; then EXTRA=(--node-arg=-p --node-arg=tf_mode:=map_base); fi
mkdir -p "$OUT"
for bag in query_1 query_2; do
  for k in $STARTS; do
    j="$OUT/$bag-$k${NO_ODOM:+-noodom}.json"
    $RELOC -q eval-bag --live --map "$MAP" --bag "$DATA/bags/$bag" --start-frame "$k" "${EXTRA[@]}" --json "$j" \
      > /dev/null
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], 'handled', d['queries'], \
'published', d['localized'], 'wrong', d['localized_wrong'], 'first_pose_s', d['replay'].get('first_pose_s'), \
'nees_mean', round(d['nees_position']['mean'] or -1, 2))" \
      "$j" "$bag" "$k"
  done
done
