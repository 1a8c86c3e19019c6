# Admin control plane: size parsing, the admin wire format, AdminServer + AdminClient.
kelpie_unit_test(size_parse_test kelpie_common)
kelpie_unit_test(admin_wire_test kelpie_common)
kelpie_unit_test(admin_server_test kelpie_admin_client kelpie_common)
# daemon/ builds the server into kelpied; the test compiles it on its own so it
# does not depend on the daemon's target layout.
target_sources(admin_server_test PRIVATE ${CMAKE_SOURCE_DIR}/daemon/admin_server.cc)
