# The replicated cluster end to end (issue 3): several kelpied on this host sharing
# a `local` membership state directory, driven by real NBD clients. Shared helpers
# are in cluster_lib.sh. Each test stays under ~3 minutes on a 2-core host.
kelpie_integration_test(cluster_kill_during_fio cluster_kill_during_fio_test.sh 240)
kelpie_integration_test(cluster_gateway cluster_gateway_test.sh 180)
kelpie_integration_test(cluster_second_writer cluster_second_writer_test.sh 120)
kelpie_integration_test(cluster_crash_all cluster_crash_all_test.sh 180)
kelpie_integration_test(cluster_stale_node cluster_stale_node_test.sh 180)
kelpie_integration_test(cluster_flipped_byte cluster_flipped_byte_test.sh 120)
kelpie_integration_test(cluster_min_copies cluster_min_copies_test.sh 180)
kelpie_integration_test(cluster_join cluster_join_test.sh 180)
kelpie_integration_test(cluster_sigstop cluster_sigstop_test.sh 180)
kelpie_integration_test(cluster_fs cluster_fs_test.sh 180)
kelpie_integration_test(cluster_gateway_crash cluster_gateway_crash_test.sh 180)
# DESIGN.md rule 4: a failed write and an unclean stop end with equal replicas, no --repair.
kelpie_integration_test(cluster_resync cluster_resync_test.sh 240)
# Rule 4 across a copy-on-write: copies made from an unsettled object are settled too.
kelpie_integration_test(cluster_cow_resync cluster_cow_resync_test.sh 180)
# Issue 13 case 1: a frozen gateway's attach is taken over; its next write fails
# (local driver, and ZooKeeper: a session lost while frozen).
kelpie_integration_test(cluster_two_writers cluster_two_writers_test.sh 180)
kelpie_integration_test(cluster_two_writers_zk cluster_two_writers_test.sh 240)
set_property(TEST integration.cluster_two_writers_zk APPEND PROPERTY ENVIRONMENT "KELPIE_MEMBERSHIP=zookeeper")
# Issue 13 case 3: a gateway killed with writes unsettled resyncs the VDI when reattached.
kelpie_integration_test(cluster_gateway_reattach cluster_gateway_reattach_test.sh 180)
# Issue 13 case 3: a storage node killed twice before its unclean resync still resyncs.
kelpie_integration_test(cluster_unclean_twice cluster_unclean_twice_test.sh 240)

# Issue 4: scenarios 1, 4 and 5 again on the zookeeper driver (the same scripts;
# cluster_lib.sh starts a private ZooKeeper when KELPIE_MEMBERSHIP=zookeeper), and
# the start-up refusals of bad specs, unreachable ensembles and foreign nodes.
foreach(scenario cluster_kill_during_fio cluster_stale_node cluster_crash_all)
  kelpie_integration_test(${scenario}_zk ${scenario}_test.sh 300)
  set_property(TEST integration.${scenario}_zk APPEND PROPERTY ENVIRONMENT "KELPIE_MEMBERSHIP=zookeeper")
endforeach()
kelpie_integration_test(cluster_zk_startup_errors cluster_zk_startup_errors_test.sh 180)
kelpie_integration_test(cluster_enospc cluster_enospc_test.sh 180)
# DESIGN.md rule 2: newest copies only on absent nodes make objects unavailable (EIO), never stale.
kelpie_integration_test(cluster_unavailable cluster_unavailable_test.sh 300)
kelpie_integration_test(cluster_unavailable_zk cluster_unavailable_test.sh 300)
set_property(TEST integration.cluster_unavailable_zk APPEND PROPERTY ENVIRONMENT "KELPIE_MEMBERSHIP=zookeeper")
# DESIGN.md rule 7: old copies go per object while a node never reports "done".
kelpie_integration_test(cluster_old_copies cluster_old_copies_test.sh 180)
# Issue 13, case 7: after create/snapshot returns, every other node serves the export at once.
kelpie_integration_test(cluster_read_your_writes cluster_read_your_writes_test.sh 180)
kelpie_integration_test(cluster_read_your_writes_zk cluster_read_your_writes_test.sh 180)
set_property(TEST integration.cluster_read_your_writes_zk APPEND PROPERTY ENVIRONMENT "KELPIE_MEMBERSHIP=zookeeper")
# Issue 13 case 4: a heartbeating node its peers can not reach is evicted, but only
# on two members' reports (cluster/peer_reachability.h).
kelpie_integration_test(cluster_unreachable cluster_unreachable_test.sh 180)
