# The kelpie admin CLI end to end against a real kelpied.
kelpie_integration_test(cli cli_test.sh 300)
