#!/usr/bin/env bash
# kcat (librdkafka's CLI) against a real broker: metadata (-L), produce from stdin (-P),
# consume (-C -o beginning -e) and compare, keys/headers, consume from an offset, -Q by time.
# The broker is a fresh `rill serve` (RILL_BIN) or KAFKA_BOOTSTRAP when set.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/broker.sh
RILL_COMPAT_NAME=kcat
source "$here/lib/broker.sh"

command -v kcat >/dev/null || { echo "kcat not installed (apt-get install kcat)"; exit 1; }
broker_start || exit 1
trap broker_stop EXIT

B="$BOOTSTRAP"
K=(timeout 60 kcat -b "$B" -X socket.timeout.ms=30000 -X topic.metadata.refresh.interval.ms=1000)
work="$(mktemp -d)"
trap 'broker_stop; rm -rf "$work"' EXIT
pass=0; fail=0
ok()   { echo "ok   - $1"; pass=$((pass + 1)); }
bad()  { echo "FAIL - $1"; fail=$((fail + 1)); }
check() { local name="$1"; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

# kcat has no create-topic command; the broker's auto-creation on produce or metadata
# request is not assumed, so topics are created with the Python admin client when
# available, else by the first produce (auto.create.topics.enable).
topic="kcat-$(date +%s)-$RANDOM"
create_topic() {
  local t="$1" parts="$2"
  if [[ -n "${COMPAT_PYTHON:-}" ]]; then
    "$COMPAT_PYTHON" - "$B" "$t" "$parts" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
b, t, p = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = AdminClient({"bootstrap.servers": b})
a.create_topics([NewTopic(t, p, 1)], operation_timeout=30)[t].result(timeout=30)
PY
  fi
}
wait_topic() {  # until -L shows the topic with its partitions, bounded
  local t="$1" parts="$2"
  for _ in $(seq 1 100); do
    if "${K[@]}" -L -t "$t" -J 2>/dev/null | grep -q "\"partition\":$((parts - 1))"; then return 0; fi
    sleep 0.3
  done
  return 1
}

create_topic "$topic" 2
check "create topic and see it in metadata (kcat -L -t)" wait_topic "$topic" 2

meta="$("${K[@]}" -L 2>&1)"
check "kcat -L lists brokers" grep -qE '[0-9]+ brokers?:' <<<"$meta"
check "kcat -L lists the topic with 2 partitions" grep -q "topic \"$topic\" with 2 partitions" <<<"$meta"

# produce 1000 lines to partition 0 from stdin, then consume them back
seq -f "line-%06g with some payload" 1 1000 > "$work/in.txt"
check "kcat -P exits 0" "${K[@]}" -P -t "$topic" -p 0 -X acks=all < "$work/in.txt"
"${K[@]}" -C -t "$topic" -p 0 -o beginning -e -q > "$work/out.txt"
check "kcat -C -o beginning -e returns exactly what was produced" cmp -s "$work/in.txt" "$work/out.txt"

# consume from an absolute offset, with offsets printed by a format string
"${K[@]}" -C -t "$topic" -p 0 -o 990 -e -q -f '%o %s\n' > "$work/tail.txt"
seq 991 1000 | awk '{ printf "%d line-%06d with some payload\n", $1 - 1, $1 }' > "$work/tail.want"
check "kcat -C -o 990 starts at offset 990" cmp -s "$work/tail.want" "$work/tail.txt"

# keys (-K) and headers (-H), compression, partition 1
printf 'k1:v1\nk2:v2\nk3:\n' | "${K[@]}" -P -t "$topic" -p 1 -K: -H trace=abc -z zstd -X acks=1
"${K[@]}" -C -t "$topic" -p 1 -o beginning -e -q -f 'key=%k value=%s headers=%h\n' > "$work/kv.txt"
printf 'key=k1 value=v1 headers=trace=abc\nkey=k2 value=v2 headers=trace=abc\nkey=k3 value= headers=trace=abc\n' > "$work/kv.want"
check "keys, headers and zstd through kcat" cmp -s "$work/kv.want" "$work/kv.txt"

# binary-safe: 200 random records delimited by a byte sequence that cannot occur in base64
head -c 112500 /dev/urandom | base64 -w 750 > "$work/b64.txt"   # 200 lines of 750 chars
"${K[@]}" -P -t "$topic" -p 0 -z gzip < "$work/b64.txt"
"${K[@]}" -C -t "$topic" -p 0 -o 1000 -e -q > "$work/b64.out"
check "gzip batch of 200 records round trip at offset 1000" cmp -s "$work/b64.txt" "$work/b64.out"

# watermarks via -Q (offset for time): -1 timestamp means latest
q="$("${K[@]}" -Q -t "$topic:0:-1" 2>&1)"
check "kcat -Q latest offset of partition 0 is 1200 ($q)" grep -q "offset 1200" <<<"$q"
q="$("${K[@]}" -Q -t "$topic:0:-2" 2>&1)"
check "kcat -Q earliest offset of partition 0 is 0 ($q)" grep -q "offset 0\b" <<<"$q"

echo "kcat: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
