# Replication (included by cluster_tests.cmake): rule 4's resync choice as a pure
# function (cluster/replica_resync.h).
kelpie_unit_test(replica_resync_test kelpie_cluster)
