kelpie_unit_test(local_membership_test kelpie_cluster)
# Against a real ZooKeeper server that the test starts and stops itself
# (test/integration/zookeeper_lib.sh); CTest name unit.zk_membership_test.
add_executable(zookeeper_membership_test unit/zookeeper_membership_test.cc)
target_link_libraries(zookeeper_membership_test PRIVATE kelpie_cluster GTest::gtest GTest::gtest_main)
target_compile_definitions(zookeeper_membership_test PRIVATE KELPIE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_test(NAME unit.zk_membership_test COMMAND zookeeper_membership_test)
set_tests_properties(unit.zk_membership_test PROPERTIES TIMEOUT 300)
kelpie_unit_test(zk_records_test kelpie_cluster)
