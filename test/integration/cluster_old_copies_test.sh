#!/usr/bin/env bash
# DESIGN.md rule 7: old copies go per object, once every current replica holds them
# durably — not once every node reports recovery "done", which under churn, or while
# a node is "incomplete", never happens. 3 nodes, copies 2: P1 over the whole VDI.
# Node 2 is kept from ever reporting "done" (its RECOVERED_THROUGH record can not be
# written: the temporary file's name is taken by a directory). Node 4 joins; every
# node pulls what it now owns. With node 2 still not "done", the copies nodes no
# longer own must leave their data directories (each object on exactly 2 of the 4),
# the VDI must read back P1 (md5 through NBD, every node) and `cluster check` must
# be clean.
source "$(dirname "$0")/harness.sh"
source "$(dirname "$0")/cluster_lib.sh"

SIZE=$((48 * 1024 * 1024))
start_cluster 3 2 1
ncli 1 vdi create disk 48M --object-size 1M
qio "$(node_uri 1 disk)" 'write -P 0xa1 0 48M'
head -c "$SIZE" /dev/zero | tr '\0' '\241' >"$LT_TMP/p1"
P1=$(file_md5 "$LT_TMP/p1")
[ "$(export_md5 "$(node_uri 1 disk)")" = "$P1" ] || cfail "P1 does not read back through node 1"

# Object files of node I (names only), one a line.
objects_of() {
  local f
  for f in "$CL_DIR/n$1/objects"/*; do
    f=${f##*/}
    if [[ $f =~ ^[0-9a-f]{32}$ ]]; then echo "$f"; fi
  done | sort
}
# How many of nodes 1-4 hold each object (one count a line, deduplicated).
copy_counts() {
  for i in 1 2 3 4; do objects_of "$i"; done | sort | uniq -c | awk '{print $1}' | sort -u
}

PHASE="node 2 can not record a completed recovery"
[ "$(copy_counts)" = 2 ] || cfail "objects are not on exactly 2 nodes after the write"
mkdir "$CL_DIR/n2/.RECOVERED_THROUGH.tmp"

PHASE="node 4 joins; node 2 never done"
start_node 4
wait_settled 4 30
EPOCH=$(cluster_epoch)
# Every node but node 2 "done"; node 2 pulled everything but can not say so.
_stuck() {
  local json
  json=$(ncli 1 node recovery --json 2>/dev/null) || return 1
  check_json "$json" "len(doc) == 4" "all(r['epoch'] == $EPOCH for r in doc)" \
    "all(r['done'] == r['to_recover'] for r in doc)" \
    "sorted(r['state'] for r in doc) == ['done', 'done', 'done', 'recovering']" \
    "[r['state'] for r in doc if r['node'] == '$(node_id 2)'] == ['recovering']" 2>/dev/null
}
poll_until 60 _stuck || cfail "epoch $EPOCH: not (3 nodes done, node 2 recovering): $(ncli 1 node recovery --json)"
grep -q "epoch $EPOCH: could not record recovery done" "$CL_DIR/n2.log" ||
  cfail "node 2 did not fail to record its recovery"
[ -n "$(objects_of 4)" ] || cfail "node 4 pulled nothing: the test proves nothing"
started=$SECONDS
_two_each() { [ "$(copy_counts)" = 2 ]; }
poll_until 40 _two_each || {
  echo "copies per object: $(copy_counts | tr '\n' ' ')" >&2
  cfail "old copies stay while node 2 is not done (rule 7)"
}
echo "old copies gone in $((SECONDS - started)) s after recovery, node 2 never done"
_stuck || cfail "the premise changed (epoch or states): $(ncli 1 node recovery --json)"
grep -hE "epoch $EPOCH: removed [0-9]+ copies this node no longer owns" "$CL_DIR"/n[123].log ||
  cfail "no log line counts the removed copies"

PHASE="data after the removals"
for i in 1 2 3 4; do
  got=$(export_md5 "$(node_uri "$i" disk)")
  [ "$got" = "$P1" ] || cfail "md5 through node $i is $got, want P1's $P1"
done
check=$(ncli 1 cluster check --json) || cfail "cluster check failed: $check"
check_json "$check" "doc['issues'] == []" "doc['objects_checked'] > 0" ||
  cfail "cluster check is not clean: $check"
echo "cluster check: $(json_get "$check" 'doc["objects_checked"]') objects, $(json_get "$check" 'doc["copies_checked"]') copies, clean"
[ "$(cluster_epoch)" = "$EPOCH" ] || cfail "the epoch moved during the test ($EPOCH -> $(cluster_epoch))"
expect_all_alive
echo PASS
