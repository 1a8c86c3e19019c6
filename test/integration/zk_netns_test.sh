#!/usr/bin/env bash
# Issue 4, test 2: multi-host. Three kelpied, each in its own network namespace,
# on a bridge with a private ZooKeeper (netns_lib.sh); a client in a fourth
# namespace writes through NBD over TCP to node 1 the whole time. Node 3's link
# goes down: once its session expires the others make a new epoch without it and
# the writes go on; node 3 itself does not acknowledge a write (its lease lapsed)
# and logs that it lost touch with ZooKeeper.
# The link comes back: node 3 rejoins, recovers, and the whole VDI reads back as
# the client wrote it through every node.
# ZooKeeper's own log (WARN and up, in its zookeeper.out) needs an slf4j binding on
# the class path; without one the server logs nothing.
export ZK_CLASSPATH=${ZK_CLASSPATH:-/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar}
# cluster_lib.sh then shows ZooKeeper's output with the nodes' logs on a failure.
export KELPIE_MEMBERSHIP=zookeeper
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/netns_lib.sh"
netns_enter_hub "$@"
# From here on: inside the hub namespace.
source "$(dirname "$0")/cluster_lib.sh"
source "$(dirname "$0")/zookeeper_lib.sh"

SESSION_MS=4000
SIZE=$((64 * M))
WRITER="$(dirname "$0")/nbd_writer.py"
WRITER_PID=""
PROBE_PID=""
cleanup() {
  local pid
  for pid in "$WRITER_PID" "$PROBE_PID"; do
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  cluster_cleanup
  stop_zookeeper >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$CL_DIR"
mkdir -p "$CL_DIR"
netns_add client 10.213.1.100
netns_zookeeper_on_bridge
start_zookeeper "$CL_DIR/zk"
SPEC=$(netns_zookeeper_spec kelpie/netns "$SESSION_MS")
echo "spec: $SPEC"
for i in 1 2 3; do ns_start_node "$i" "$SPEC"; done
ncli 1 cluster format --copies 3 --min-copies 2 || cfail "cluster format failed"
wait_settled 3
ncli 1 cluster info | grep -q "zookeeper:$NETNS_HUB_ADDR" ||
  cfail "cluster info does not show the zookeeper driver: $(ncli 1 cluster info)"
ncli 1 cluster info

PHASE="fill through node 1 from the client namespace"
ncli 1 vdi create disk "$SIZE"
ncli 1 vdi create probe 8M
IMAGE="$CL_DIR/expected.img"
head -c "$SIZE" /dev/urandom >"$IMAGE"
netns_run client nbdcopy --connections=4 "$IMAGE" "$(ns_node_uri 1 disk)" ||
  cfail "nbdcopy through node 1 from the client namespace failed"
wait_copies disk 3 60

PHASE="writes through node 1 and a probe connection to node 3"
# Every write gets 30 s: longer than a session timeout plus a new epoch, so a
# write that waits for the epoch that drops node 3 is not a failure.
netns_run client "$SYS_PYTHON" "$WRITER" mirror "$(ns_node_uri 1 disk)" "$IMAGE" \
  "$CL_DIR/writer.log" "$CL_DIR/writer.stop" --max-writes 1000000 --deadline-s 30 \
  2>"$CL_DIR/writer.err" &
WRITER_PID=$!
netns_run n3 "$SYS_PYTHON" "$WRITER" probe "$(ns_node_uri 3 probe)" "$CL_DIR/probe.go" \
  "$CL_DIR/probe.result" --hold-s 10 2>"$CL_DIR/probe.err" &
PROBE_PID=$!
poll_until 30 grep -qx ready "$CL_DIR/probe.result" ||
  cfail "the probe did not write through node 3: $(cat "$CL_DIR/probe.err")"
writes() { grep -c '^A ' "$CL_DIR/writer.log" 2>/dev/null || true; }
writer_alive() { kill -0 "$WRITER_PID" 2>/dev/null || cfail "the writer ended: $(cat "$CL_DIR/writer.err")"; }
writes_at_least() { writer_alive; [ "$(writes)" -ge "$1" ]; }
poll_until 30 writes_at_least 50 || cfail "fewer than 50 writes through node 1 in 30s"
EPOCH=$(cluster_epoch)
echo "epoch $EPOCH, $(writes) writes so far"

PHASE="node 3 cut off"
LOG3_LINES=$(wc -l <"$CL_DIR/n3.log")
CUT_AT=$SECONDS
netns_link_down n3
CL_UP[3]=0
wait_epoch_at_least $((EPOCH + 1)) 30
wait_settled 2 30
echo "new epoch $(cluster_epoch) with 2 storage nodes $((SECONDS - CUT_AT))s after the cut"
# Node 3 still answers its admin inside its namespace: out of touch with ZooKeeper,
# in the old epoch.
CUT_INFO=$(ns_cli 3 cluster info --json) || cfail "node 3 does not answer inside its namespace"
check_json "$CUT_INFO" "doc['epoch'] == $EPOCH" "', connected,' not in doc['driver']" ||
  cfail "cut-off node 3 should be in epoch $EPOCH and not connected to ZooKeeper"
echo "node 3 (cut off): epoch $EPOCH, $(json_get "$CUT_INFO" 'doc["driver"]')"
# Node 3 has not heard from ZooKeeper for longer than the session timeout: a write
# on its open connection must not be acknowledged.
touch "$CL_DIR/probe.go"
poll_until 30 grep -qvx ready "$CL_DIR/probe.result" || cfail "the probe did not finish"
RESULT=$(cat "$CL_DIR/probe.result")
echo "write through cut-off node 3: $RESULT"
case $RESULT in
  held | error:*) ;;
  *) cfail "cut-off node 3 acknowledged a write: $RESULT" ;;
esac
wait "$PROBE_PID" || true
PROBE_PID=""
tail -n +"$((LOG3_LINES + 1))" "$CL_DIR/n3.log" >"$CL_DIR/n3.cut.log"
grep -q 'lost touch with ZooKeeper' "$CL_DIR/n3.cut.log" ||
  cfail "node 3's log does not say it lost touch with ZooKeeper while cut off"
echo "node 3 logged: $(grep -m1 'lost touch with ZooKeeper' "$CL_DIR/n3.cut.log" | cut -c1-200)"
BEFORE=$(writes)
poll_until 60 writes_at_least $((BEFORE + 100)) ||
  cfail "writes through node 1 did not go on after the new epoch ($(writes) of $((BEFORE + 100)))"
echo "$(writes) writes, $((SECONDS - CUT_AT))s after the cut"

PHASE="node 3 back"
netns_link_up n3
CL_UP[3]=1
wait_settled 3 60
wait_recovery_done 120
BEFORE=$(writes)
poll_until 60 writes_at_least $((BEFORE + 50)) || cfail "writes stopped after node 3 came back"
touch "$CL_DIR/writer.stop"
wait "$WRITER_PID" || cfail "the writer failed: $(cat "$CL_DIR/writer.err")"
WRITER_PID=""
echo "the client wrote $(writes) blocks in all; epoch $(cluster_epoch); longest wait between two" \
  "acknowledgements: $(awk '{t = $4 / 1e6; if (p && t - p > g) g = t - p; p = t} END {printf "%d", g}' \
  "$CL_DIR/writer.log") ms"
wait_copies disk 3 60
WANT=$(file_md5 "$IMAGE")
for i in 1 2 3; do
  got=$(set -o pipefail; netns_run client nbdcopy "$(ns_node_uri "$i" disk)" - | md5sum | cut -d' ' -f1) ||
    cfail "reading the VDI through node $i failed"
  [ "$got" = "$WANT" ] || cfail "md5 through node $i is $got, the client wrote $WANT"
done
echo "md5 $WANT through every node"
check_json "$(ncli 1 cluster check --json)" "doc['issues'] == []" || cfail "cluster check finds problems"
expect_all_alive
echo PASS
