#!/usr/bin/env bash
# Issue 4, test 4. Bad input at start-up: kelpied exits non-zero with exactly one
# clear line on stderr for a malformed zookeeper spec, a bad cluster path and an
# unreachable ensemble (within its connect wait); and a node whose data directory
# belongs to another cluster is refused, on both drivers (zookeeper and local).
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/lifecycle_lib.sh"
source "$(dirname "$0")/zookeeper_lib.sh"
trap cleanup_kelpied EXIT

DIR="$KELPIE_TEST_DIR/cluster_zk_startup_errors"
rm -rf "$DIR"
mkdir -p "$DIR"

# Usage: expect_start_refused NAME DATA SPEC LINE  kelpied must exit non-zero within
# 30 s, print exactly LINE on stderr and nothing on stdout.
expect_start_refused() {
  local name=$1 data=$2 spec=$3 want=$4 status=0 start=$SECONDS
  timeout 30 "$KELPIED" --data "$data" --cluster "$spec" --nbd-listen none \
    --admin-listen "127.0.0.1:$(free_port)" --log-file "$DIR/$name.log" \
    </dev/null >"$DIR/$name.out" 2>"$DIR/$name.err" || status=$?
  [ "$status" != 0 ] || fail "$name: kelpied started with --cluster $spec"
  [ "$status" != 124 ] || fail "$name: kelpied still running after 30 s"
  [ ! -s "$DIR/$name.out" ] || fail "$name: unexpected stdout: $(cat "$DIR/$name.out")"
  [ "$(wc -l <"$DIR/$name.err")" = 1 ] || fail "$name: want one line on stderr, got: $(cat "$DIR/$name.err")"
  [ "$(cat "$DIR/$name.err")" = "$want" ] ||
    fail "$name: stderr is
  $(cat "$DIR/$name.err")
want
  $want"
  echo "$name: refused in $((SECONDS - start)) s (exit $status): $want"
}

# Usage: start_one NAME SPEC  starts a storage node in the background (pid in
# ONE_PID, admin address in ONE_ADMIN) and waits for its admin port.
start_one() {
  local name=$1 spec=$2
  ONE_ADMIN="127.0.0.1:$(free_port)"
  "$KELPIED" --data "$DIR/$name" --cluster "$spec" --nbd-listen none --nbd-unix "$DIR/$name.sock" \
    --admin-listen "$ONE_ADMIN" --log-file "$DIR/$name.log" --threads 1 \
    </dev/null >>"$DIR/$name.out" 2>&1 &
  ONE_PID=$!
  KD_PIDS+=("$ONE_PID")
  poll_until 30 "$KELPIE" --addr "$ONE_ADMIN" node info || fail "$name did not come up: $(cat "$DIR/$name.out")"
}

# Usage: format_one NAME SPEC  a formatted one-node cluster; prints its cluster uuid
# and stops the node (SIGTERM).
format_one() {
  local name=$1 spec=$2 uuid
  start_one "$name" "$spec" >&2
  "$KELPIE" --addr "$ONE_ADMIN" cluster format --copies 1 --min-copies 1 >/dev/null ||
    fail "$name: cluster format failed"
  uuid=$(json_get "$("$KELPIE" --addr "$ONE_ADMIN" cluster info --json)" 'doc["cluster_uuid"]')
  kill -TERM "$ONE_PID"
  wait "$ONE_PID" 2>/dev/null || true
  echo "$uuid"
}

start_zookeeper "$DIR/zookeeper"
BAD_PORT=$(free_port)
EINVAL="(Invalid argument)"
USAGE="(expected zookeeper:HOST:PORT[,HOST:PORT...]/path[?session_timeout_ms=N])"

PHASE="malformed specs"
expect_start_refused no-port "$DIR/x" "zookeeper:127.0.0.1/kelpie/x" \
  "kelpied: membership 'zookeeper:127.0.0.1/kelpie/x': host '127.0.0.1' is not HOST:PORT $USAGE $EINVAL"
expect_start_refused no-path "$DIR/x" "zookeeper:$ZK_ADDR" \
  "kelpied: membership 'zookeeper:$ZK_ADDR': no cluster path after the hosts $USAGE $EINVAL"
expect_start_refused bad-path "$DIR/x" "zookeeper:$ZK_ADDR/kelpie//x" \
  "kelpied: membership 'zookeeper:$ZK_ADDR/kelpie//x': bad cluster path '/kelpie//x' $USAGE $EINVAL"
expect_start_refused bad-option "$DIR/x" "zookeeper:$ZK_ADDR/kelpie/x?session_timeout=5" \
  "kelpied: membership 'zookeeper:$ZK_ADDR/kelpie/x?session_timeout=5': unknown option 'session_timeout' $USAGE $EINVAL"

PHASE="unreachable ensemble"
SPEC="zookeeper:127.0.0.1:$BAD_PORT/kelpie/x?session_timeout_ms=2000"
expect_start_refused unreachable "$DIR/x" "$SPEC" \
  "kelpied: membership '$SPEC': zookeeper 127.0.0.1:$BAD_PORT: no connection within 2000 ms (Connection timed out)"

PHASE="a node of another cluster (zookeeper)"
SPEC_A=$(zookeeper_spec kelpie/a 3000)
SPEC_B=$(zookeeper_spec kelpie/b 3000)
SPEC_C=$(zookeeper_spec kelpie/c 3000)
CLUSTER_A=$(format_one a "$SPEC_A")
CLUSTER_B=$(format_one b "$SPEC_B")
[ -n "$CLUSTER_A" ] && [ "$CLUSTER_A" != "$CLUSTER_B" ] || fail "two clusters, one uuid: $CLUSTER_A"
expect_start_refused foreign-zk "$DIR/a" "$SPEC_B" \
  "kelpied: data directory $DIR/a belongs to cluster $CLUSTER_A, but $SPEC_B holds cluster $CLUSTER_B $EINVAL"
expect_start_refused unformatted-zk "$DIR/a" "$SPEC_C" \
  "kelpied: data directory $DIR/a belongs to cluster $CLUSTER_A, but $SPEC_C holds no formatted cluster $EINVAL"
# Its own cluster still takes it back.
start_one a "$SPEC_A"
poll_until 30 test "$(json_get "$("$KELPIE" --addr "$ONE_ADMIN" cluster info --json)" 'doc["status"]')" = running ||
  fail "node a does not run in its own cluster again"
INFO=$("$KELPIE" --addr "$ONE_ADMIN" cluster info)
echo "$INFO" | grep -Eq "^driver: +zookeeper:$ZK_ADDR/kelpie/a \(session 0x[0-9a-f]+, connected, timeout 3000 ms\)$" ||
  fail "cluster info does not show the ensemble and session: $INFO"
kill -TERM "$ONE_PID"
wait "$ONE_PID" 2>/dev/null || true

PHASE="a node of another cluster (local)"
CLUSTER_L=$(format_one l "local:$DIR/state-l")
expect_start_refused foreign-local "$DIR/l" "local:$DIR/state-b-local" \
  "kelpied: data directory $DIR/l belongs to cluster $CLUSTER_L, but local:$DIR/state-b-local holds no formatted cluster $EINVAL"
CLUSTER_M=$(format_one m "local:$DIR/state-m")
expect_start_refused foreign-local2 "$DIR/l" "local:$DIR/state-m" \
  "kelpied: data directory $DIR/l belongs to cluster $CLUSTER_L, but local:$DIR/state-m holds cluster $CLUSTER_M $EINVAL"
echo PASS
