#!/usr/bin/env bash
# Issue 3, test 7. Node 3 is SIGSTOPped while a client writes through it; past
# failure detection the others make an epoch without it and "disk" is overwritten
# through node 1. On SIGCONT node 3 still believes in the old epoch: what it then
# sends is refused by the epoch fence, so no copy goes back in time. Node 3 rejoins
# (a new epoch), recovers, serves only the new data, every write its client had
# acknowledged is there, and `cluster check` finds every replica identical.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
ncli 1 vdi create disk 32M
ncli 1 vdi create side 16M
qio "$(node_uri 1 disk)" 'write -P 0xa1 0 32M'
EPOCH0=$(cluster_epoch)

PHASE="SIGSTOP node 3 under writes"
acked_start "$(node_uri 3 side)" "$LT_TMP/side.log" --connections 2 --area $((16 * M))
poll_until 60 acked_at_least "$LT_TMP/side.log" 50 || cfail "no writes acknowledged through node 3"
sigstop_node 3
STOPPED_AT=$SECONDS
wait_settled 2 10
echo "epoch $(cluster_epoch) without node 3 after $((SECONDS - STOPPED_AT))s"
[ $((SECONDS - STOPPED_AT)) -le 5 ] || cfail "the stopped node was noticed only after $((SECONDS - STOPPED_AT))s"
head -c $((32 * M)) /dev/urandom >"$LT_TMP/new"
NEW=$(file_md5 "$LT_TMP/new")
nbdcopy --connections=2 "$LT_TMP/new" "$(node_uri 1 disk)" || cfail "nbdcopy while node 3 is stopped failed"

PHASE="SIGCONT node 3"
LOG_LINES=$(wc -l <"$CL_DIR/n3.log")
sigcont_node 3
wait_settled 3 30
check_json "$(ncli 1 cluster info --json)" \
  "doc['history'][-1]['reason'].split()[0] in ('rejoin', 'join') and '$(node_id 3)' in doc['history'][-1]['reason']" ||
  cfail "the last epoch is not node 3's rejoin"
# The client of node 3 either carries on in the new epoch or gets an error; stop it.
kill "$ACKED_PID" 2>/dev/null || true
wait "$ACKED_PID" 2>/dev/null || true
wait_recovery_done 90
tail -n +$((LOG_LINES + 1)) "$CL_DIR/n3.log" | grep -iE 'epoch|stale|fence' | head -n 8 || true

PHASE="after the rejoin"
for i in 3 1 2; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$NEW" ] || cfail "disk md5 through node $i is $got, want $NEW"
done
for i in 1 2 3; do acked_verify "$(node_uri "$i" side)" "$LT_TMP/side.log" --area $((16 * M)); done
wait_copies disk 3 60
status=0
ncli 1 cluster check --json >"$LT_TMP/check.json" || status=$?
[ "$status" = 0 ] || { cat "$LT_TMP/check.json" >&2; cfail "cluster check exited $status after the rejoin"; }
expect_all_alive
echo PASS
