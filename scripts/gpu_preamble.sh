# Sourced by the device scripts from run 57 on: the environment, $OUT, a start time and the card;
# summary LOG (from run 110 on) prints a verbose pytest log's counts and errors.
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
summary() {  # counts of a verbose pytest log, then its errors (a timed-out xdist worker "crashed")
  echo "PASSED $(grep -c ' PASSED ' "$1"), FAILED $(grep -c ' FAILED ' "$1"), ERROR $(grep -c ' ERROR ' "$1")," \
    "XFAIL $(grep -c ' XFAIL ' "$1")"
  grep -E "^E  |^FAILED|^ERROR|Timeout|crashed|[0-9]+ (passed|failed|errors?)" "$1" | cut -c1-220 | head -20
}
