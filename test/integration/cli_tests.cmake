# The kelpie admin CLI end to end against a real kelpied.
kelpie_integration_test(cli cli_test.sh 300)
# `make demo` / `make stop` (scripts/demo.sh) from clean run directories, on private ports.
kelpie_integration_test(demo demo_test.sh 120)
