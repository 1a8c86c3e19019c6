# The peer protocol: frame encoding (peer_wire) and the transport (PeerServer,
# PeerClient) over real Unix and TCP loopback sockets.
kelpie_unit_test(peer_test kelpie_cluster)
