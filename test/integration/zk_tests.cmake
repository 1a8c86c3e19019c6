# Issue 4 on real ZooKeeper, each test with its own private server
# (zookeeper_lib.sh): several hosts in network namespaces (netns_lib.sh, needs
# root), and ZooKeeper restarted under fio. Each stays under ~4 minutes.
kelpie_integration_test(zk_netns zk_netns_test.sh 240)
kelpie_integration_test(zk_restart zk_restart_test.sh 240)
