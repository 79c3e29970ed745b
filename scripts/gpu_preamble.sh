# Sourced by the device scripts from run 57 on: the environment, $OUT, a start time and the card.
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
