# shellcheck shell=bash
# Several hosts on one machine, for the multi-host tests (issue 4): every node in
# its own network namespace, joined by a veth pair to a bridge in a "hub"
# namespace. The test itself and its private ZooKeeper run in the hub, so
# zookeeper_lib.sh works unchanged there (its 127.0.0.1 is the hub's). Nothing
# touches the host's network: the addresses (10.213.1.0/24) exist only inside
# these namespaces, and every test has its own hub, so tests can run side by side.
# Needs root and iproute2. Source it after harness.sh.
#
#   netns_enter_hub "$@"     first thing in a test: unless already inside, makes the
#                            hub (lo, bridge br0 = NETNS_HUB_ADDR/24), runs the test
#                            again inside it and exits with its status. On the way
#                            out (any exit, ^C, TERM) it kills what still runs in the
#                            test's namespaces (only those: `ip netns pids`) and
#                            deletes them; their veths and the bridge go with them.
#                            Inside the hub it returns at once.
#   netns_add NAME ADDR      namespace NAME with lo up and eth0 = ADDR/24 on the
#                            bridge (hub side: vNAME).
#   netns_run NAME CMD...    CMD inside NAME (same pid: `ip netns exec` does not fork).
#   netns_link_down NAME / netns_link_up NAME   eth0 in NAME down / up: the cut.
#   netns_zookeeper_on_bridge  before start_zookeeper: the server listens on every
#                            hub address (lo and br0) instead of 127.0.0.1 only.
#   netns_zookeeper_spec PATH [TIMEOUT_MS]   zookeeper_spec with the bridge address:
#                            the spec nodes in other namespaces use.
#
# Nodes in namespaces (after sourcing cluster_lib.sh, whose CL_* bookkeeping they
# fill, so wait_settled, cluster_field, ncli, kill_node, dump_logs... work for them
# as long as the hub can reach them):
#   ns_start_node I SPEC [FLAGS...]  kelpied node I in namespace nI, address
#                            ns_node_addr I (10.213.1.(10+I)): peer :7000, NBD :10809,
#                            admin :7100, all bound to that address; waits until it
#                            answers. Made with netns_add when missing.
#   ns_node_uri I VDI        nbd://ADDR:10809/VDI
#   ns_cli I ARGS...         the kelpie CLI run inside node I's namespace: reaches the
#                            node even while it is cut off.
# shellcheck disable=SC2034  # used by the tests

NETNS_HUB_ADDR=10.213.1.1
NETNS_PREFIX=${NETNS_PREFIX:-}
kNetnsNbdPort=10809
kNetnsAdminPort=7100
kNetnsPeerPort=7000

_netns() { echo "${NETNS_PREFIX}$1"; }

_netns_teardown() {
  local ns pid pids=()
  for ns in $(ip netns list | awk '{print $1}' | grep "^${NETNS_PREFIX}" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do pids+=("$pid"); done
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -9 "${pids[@]}" 2>/dev/null || true
    local end=$((SECONDS + 10)) alive
    while :; do
      alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" = 1 ] && [ $SECONDS -lt $end ] || break
      sleep 0.05
    done
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep "^${NETNS_PREFIX}" || true); do
    ip netns del "$ns" 2>/dev/null || echo "netns_lib: could not delete namespace $ns" >&2
  done
}

netns_enter_hub() {
  [ -z "${NETNS_INSIDE:-}" ] || return 0
  [ "$(id -u)" = 0 ] || fail "network namespaces need root"
  command -v ip >/dev/null && command -v nsenter >/dev/null || fail "needs ip (iproute2) and nsenter"
  # Short and unique per run: namespace names are global to the host.
  NETNS_PREFIX="kz$$-"
  trap _netns_teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local hub
  hub=$(_netns hub)
  ip netns add "$hub" || fail "ip netns add $hub failed"
  ip netns exec "$hub" ip link set lo up
  ip netns exec "$hub" ip link add br0 type bridge
  ip netns exec "$hub" ip addr add "$NETNS_HUB_ADDR/24" dev br0
  ip netns exec "$hub" ip link set br0 up
  echo "netns: hub $hub, bridge br0 $NETNS_HUB_ADDR/24"
  local status=0
  # nsenter, not `ip netns exec`: the test keeps the host's mount namespace, so the
  # namespaces it adds inside are visible (and deletable) out here.
  NETNS_INSIDE=1 NETNS_PREFIX="$NETNS_PREFIX" nsenter --net="/run/netns/$hub" bash "$0" "$@" || status=$?
  exit "$status"
}

netns_add() {
  local name=$1 addr=$2 ns
  ns=$(_netns "$name")
  ip netns add "$ns" || fail "ip netns add $ns failed"
  ip link add "v$name" type veth peer name eth0 netns "$ns" || fail "veth for $ns failed"
  ip link set "v$name" master br0
  ip link set "v$name" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip addr add "$addr/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  echo "netns: $ns eth0 $addr"
}

netns_run() {
  local ns
  ns=$(_netns "$1"); shift
  ip netns exec "$ns" "$@"
}

netns_link_down() { echo "netns: $(_netns "$1") eth0 down"; netns_run "$1" ip link set eth0 down; }
netns_link_up() { echo "netns: $(_netns "$1") eth0 up"; netns_run "$1" ip link set eth0 up; }

netns_zookeeper_on_bridge() {
  # zookeeper_lib.sh binds the server to 127.0.0.1. Its ZK_JAVA is a launcher that
  # appends clientPortAddress=0.0.0.0 to the config (java.util.Properties: the last
  # value wins): in the hub that is lo and br0 only.
  local launcher
  launcher="$KELPIE_TEST_DIR/$(basename "$0" .sh).zk-java"
  mkdir -p "$KELPIE_TEST_DIR"
  cat >"$launcher" <<'EOF'
#!/bin/bash
config="${*: -1}"
echo "clientPortAddress=0.0.0.0" >>"$config"
exec /usr/bin/java "$@"
EOF
  chmod +x "$launcher"
  ZK_JAVA=$launcher
}

netns_zookeeper_spec() {
  zookeeper_spec "$@" | sed "s/127\.0\.0\.1:/$NETNS_HUB_ADDR:/"
}

ns_node_addr() { echo "10.213.1.$((10 + $1))"; }
ns_node_uri() { echo "nbd://$(ns_node_addr "$1"):$kNetnsNbdPort/$2"; }
ns_cli() {
  local i=$1; shift
  netns_run "n$i" "$KELPIE" --addr "$(ns_node_addr "$i"):$kNetnsAdminPort" "$@"
}

ns_start_node() {
  local i=$1 spec=$2; shift 2
  local addr
  addr=$(ns_node_addr "$i")
  [ -e "/run/netns/$(_netns "n$i")" ] || netns_add "n$i" "$addr"
  node_alive "$i" && fail "node $i is already running"
  CL_ADMIN[$i]="$addr:$kNetnsAdminPort"
  CL_NBD_PORT[$i]=$kNetnsNbdPort
  CL_FLAGS[$i]="$*"
  mkdir -p "$CL_DIR"
  netns_run "n$i" "$KELPIED" --data "$CL_DIR/n$i" --cluster "$spec" --listen "$addr:$kNetnsPeerPort" \
    --nbd-listen "$addr:$kNetnsNbdPort" --nbd-unix none --admin-listen "${CL_ADMIN[$i]}" \
    --threads 1 --log-file "$CL_DIR/n$i.log" "$@" </dev/null >>"$CL_DIR/n$i.out" 2>&1 &
  CL_PID[$i]=$!
  KD_PIDS+=("${CL_PID[$i]}")
  local end=$((SECONDS + 30))
  until ncli "$i" node info >/dev/null 2>&1; do
    node_alive "$i" || cfail "node $i exited while starting (log: $CL_DIR/n$i.log, $CL_DIR/n$i.out)"
    [ $SECONDS -lt $end ] || cfail "node $i did not answer on ${CL_ADMIN[$i]} within 30s"
    sleep 0.05
  done
  CL_ID[$i]=$(json_get "$(ncli "$i" node info --json)" 'doc["node_uuid"]')
  CL_UP[$i]=1
  echo "node $i: pid ${CL_PID[$i]} id ${CL_ID[$i]} in $(_netns "n$i") at $addr"
}
