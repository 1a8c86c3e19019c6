kelpie_unit_test(ring_test kelpie_cluster)
include(${CMAKE_CURRENT_LIST_DIR}/peer_tests.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/membership_tests.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/replication_tests.cmake)
kelpie_unit_test(recovery_authority_test kelpie_cluster)
# DESIGN.md rule 7: old copies go per object (cluster/old_copies.h): the decision,
# the DURABLE flag on the wire, and the store calls it rests on.
kelpie_unit_test(old_copies_test kelpie_cluster)
