# Replication (included by cluster_tests.cmake): rule 4's resync choice as a pure
# function (cluster/replica_resync.h).
kelpie_unit_test(replica_resync_test kelpie_cluster)
# Rule 4's write hold of an outside resync (kHold, replica_service.h): the wire, the
# replica's side, and the race it closes with two replicas.
kelpie_unit_test(replica_hold_test kelpie_cluster)
# One writer per VDI at the replica: the per-VDI fence fed from the VDI directory.
kelpie_unit_test(vdi_fence_test kelpie_cluster)
# Issue 13 case 6 (rule 3): an update admitted in one epoch is refused if it waited
# past the next one, and the next epoch's recovery reads wait for those being applied.
kelpie_unit_test(replica_epoch_test kelpie_cluster)
