#!/usr/bin/env bash
# Issue 3, test 4. Node 3 is killed -9; while it is down every byte of the VDI is
# overwritten through node 1. Node 3 comes back with the old copies of every
# object: reads through node 3 (which prefers its local replica) never return the
# old contents, not while it recovers nor after; after recovery every object has
# 3 copies and the VDI has the new md5 through every node.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

M=$((1024 * 1024))
start_cluster 3 3
ncli 1 vdi create disk 128M
qio "$(node_uri 1 disk)" 'write -P 0xaa 0 128M'
OLD=$(export_md5 "$(node_uri 3 disk)")
wait_copies disk 3 30

PHASE="node 3 down, overwrite"
kill_node 3
wait_settled 2 10
head -c $((128 * M)) /dev/urandom >"$LT_TMP/new"
NEW=$(file_md5 "$LT_TMP/new")
nbdcopy --connections=4 "$LT_TMP/new" "$(node_uri 1 disk)" || cfail "nbdcopy of the new contents failed"
[ "$(export_md5 "$(node_uri 2 disk)")" = "$NEW" ] || cfail "node 2 does not read the new contents"

PHASE="node 3 returns with old copies"
start_node 3
reads=0
read_through_3() {
  local got
  node_alive 3 || cfail "node 3 exited while rejoining"
  got=$(set -o pipefail; nbdcopy "$(node_uri 3 disk)" - | md5sum | cut -d' ' -f1) || return 0  # not serving yet
  reads=$((reads + 1))
  [ "$got" != "$OLD" ] || cfail "node 3 served its old copies (read $reads)"
  [ "$got" = "$NEW" ] || cfail "node 3 served neither the old nor the new contents: md5 $got (read $reads)"
}
end=$((SECONDS + 90))
until _settled 3 && _recovery_done; do
  [ $SECONDS -lt $end ] || cfail "node 3 not recovered within 90s: $(_epochs)"
  read_through_3
done
read_through_3
echo "$reads whole-VDI reads through node 3 while it rejoined and after; none stale"
wait_copies disk 3 60
for i in 1 2 3; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$NEW" ] || cfail "md5 through node $i is $got, want $NEW"
done
check_json "$(ncli 1 cluster check --json)" "doc['issues'] == []" || cfail "cluster check finds problems"
expect_all_alive
echo PASS
