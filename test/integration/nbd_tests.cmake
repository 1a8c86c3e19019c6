# Integration tests that drive a real kelpied with real NBD clients
# (nbdinfo, qemu-io, qemu-img, nbdcopy, fio, nbdfuse + loop + ext4, raw sockets).
kelpie_integration_test(nbdinfo nbdinfo_test.sh 60)
kelpie_integration_test(qemu_io qemu_io_test.sh 120)
kelpie_integration_test(convert convert_test.sh 300)
kelpie_integration_test(nbdcopy nbdcopy_test.sh 300)
kelpie_integration_test(map map_test.sh 120)
kelpie_integration_test(fio_verify fio_verify_test.sh 300)
kelpie_integration_test(fs fs_test.sh 300)
kelpie_integration_test(malformed_client malformed_client_test.py 180)
