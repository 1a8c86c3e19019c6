# VDI lifecycle end to end (issue 5): snapshots, clones, rollback, delete with
# reclaim, differential backup, object sizes, and the refusals. Shared helpers are
# in lifecycle_lib.sh.
kelpie_integration_test(snapshot snapshot_test.sh 120)
kelpie_integration_test(live_snapshot live_snapshot_test.py 180)
kelpie_integration_test(clones clones_test.sh 180)
kelpie_integration_test(rollback_chain rollback_chain_test.sh 180)
kelpie_integration_test(reclaim reclaim_test.sh 240)
kelpie_integration_test(backup backup_test.sh 300)
kelpie_integration_test(object_size object_size_test.sh 180)
kelpie_integration_test(lifecycle_errors lifecycle_errors_test.sh 120)
