# The peer protocol: frame encoding (peer_wire) and the transport (PeerServer,
# PeerClient) over real Unix and TCP loopback sockets.
kelpie_unit_test(peer_test kelpie_cluster)
# Issue 13 case 4: unreachable peers are reported and, corroborated, evicted
# (cluster/peer_reachability.h): the record, the report, the decision.
kelpie_unit_test(peer_reachability_test kelpie_cluster)
