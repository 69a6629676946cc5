# Shell helper for suites written in bash: starts a fresh rill on loopback, or uses
# KAFKA_BOOTSTRAP. Sets BOOTSTRAP. Source it, then `broker_start` and `broker_stop`.
_compat_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
RILL_READY_TIMEOUT_S="${RILL_READY_TIMEOUT_S:-30}"
_rill_pid=""
_rill_tmp=""

broker_start() {
  if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
    BOOTSTRAP="$KAFKA_BOOTSTRAP"
    return 0
  fi
  local bin="${RILL_BIN:-$_compat_repo/target/release/rill}"
  if [[ ! -x "$bin" ]]; then
    echo "rill binary not found at $bin (build it or set RILL_BIN)" >&2
    return 1
  fi
  _rill_tmp="$(mktemp -d -t rill-compat-sh-XXXXXX)"
  mkdir -p "$_rill_tmp/data"
  mkfifo "$_rill_tmp/stdout"
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$_rill_tmp/data" \
      > "$_rill_tmp/stdout" 2> "$_rill_tmp/rill-stderr.log" < /dev/null &
  _rill_pid=$!
  local line=""
  exec {_rill_fd}< "$_rill_tmp/stdout"
  if ! IFS= read -r -t "$RILL_READY_TIMEOUT_S" -u "$_rill_fd" line; then
    echo "rill printed no listening line within ${RILL_READY_TIMEOUT_S}s; stderr: $_rill_tmp/rill-stderr.log" >&2
    broker_stop; return 1
  fi
  # keep draining stdout so the broker never blocks on a full pipe
  cat <&"$_rill_fd" > /dev/null &
  exec {_rill_fd}<&-
  if [[ "$line" =~ ^rill\ listening\ on\ (127\.0\.0\.1:[0-9]+)[[:space:]]*$ ]]; then
    BOOTSTRAP="${BASH_REMATCH[1]}"
    return 0
  fi
  echo "unexpected first line from rill: '$line'" >&2
  broker_stop; return 1
}

broker_stop() {
  if [[ -n "$_rill_pid" ]] && kill -0 "$_rill_pid" 2>/dev/null; then
    kill -TERM "$_rill_pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$_rill_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$_rill_pid" 2>/dev/null
    wait "$_rill_pid" 2>/dev/null
  fi
  _rill_pid=""
  if [[ -n "$_rill_tmp" && -n "${RILL_COMPAT_LOG_DIR:-}" && -f "$_rill_tmp/rill-stderr.log" ]]; then
    cp "$_rill_tmp/rill-stderr.log" "$RILL_COMPAT_LOG_DIR/${RILL_COMPAT_NAME:-sh}-rill.log"
  fi
  [[ -n "$_rill_tmp" ]] && rm -rf "$_rill_tmp"
  _rill_tmp=""
  return 0
}
