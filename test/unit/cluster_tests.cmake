kelpie_unit_test(ring_test kelpie_cluster)
include(${CMAKE_CURRENT_LIST_DIR}/peer_tests.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/membership_tests.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/replication_tests.cmake OPTIONAL)
