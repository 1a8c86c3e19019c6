"""The figures of bench/zk_scale_bench.sh from its result directory.

    zk_scale_report.py DIR MEMBERS KILLED SESSION_MS EPOCHS_KEPT IDLE_S

Reads DIR/out.<p> (zk_scale_members report lines), DIR/times, DIR/snapshots,
DIR/mntr.<step> and DIR/members.<p>.log, prints the report.
"""

import glob
import os
import statistics
import sys


def lines(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def fields(words):
    """'epoch 3 nodes 10 created_ms 5 ...' -> {'epoch': '3', 'nodes': '10', ...}."""
    out = {}
    for i in range(0, len(words) - 1, 2):
        out.setdefault(words[i], words[i + 1])
    return out


def mntr(path):
    out = {}
    if os.path.exists(path):
        for words in lines(path):
            if len(words) == 2:
                out[words[0]] = words[1]
    return out


def spread(values):
    if not values:
        return "none"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return (f"median {statistics.median(values):.0f} ms, p90 {p90} ms, max {values[-1]} ms "
            f"({len(values)} epochs)")


def main():
    root, members, killed, session_ms, epochs_kept, idle_s = (
        sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    times = {w[0]: [int(x) for x in w[1:]] for w in lines(os.path.join(root, "times"))}
    outs = {int(p.rsplit(".", 1)[1]): lines(p) for p in glob.glob(os.path.join(root, "out.*"))}
    killed_proc = max(outs)

    # Epoch E -> created, last delivery over every process that reported it.
    epochs = {}
    for p, out in outs.items():
        for words in out:
            if words[0] != "epoch":
                continue
            f = fields(words)
            e = epochs.setdefault(int(f["epoch"]), {"nodes": int(f["nodes"]), "created": int(f["created_ms"]),
                                                     "all": 0, "procs": 0, "changes": int(f.get("changes", 1)),
                                                     "reason": " ".join(words[13:])})
            e["all"] = max(e["all"], int(f["all_ms"]))
            e["procs"] += 1
    survivors = len(outs) - 1
    print(f"ZooKeeper membership at scale: {members} members in {len(outs)} processes, "
          f"session timeout {session_ms} ms")
    start, end = times["join"]
    print(f"join: every member joined {end - start} ms after the first process started")
    e1 = epochs.get(1)
    if e1:
        print(f"format: epoch 1 ({e1['nodes']} nodes) at every member {e1['all'] - e1['created']} ms "
              f"after it was created")

    updates = [fields(w) for w in outs[0] if w[0] == "updated"]
    for i, u in enumerate(updates, 1):
        told = [int(w[4]) for out in outs.values() for w in out  # shared NAME G all_ms T
                if w[0] == "shared" and w[2] == str(i)]
        if len(told) == len(outs):
            print(f"update_shared vdis.json #{i}: stored {int(u['done_ms']) - int(u['start_ms'])} ms after the "
                  f"call, every other member told {max(told) - int(u['start_ms'])} ms after the call")
        else:
            print(f"update_shared vdis.json #{i}: only {len(told)} of {len(outs)} processes saw it at every member")

    churn = [fields(w) for w in outs[0] if w[0] == "churn"]
    if churn:
        took = [int(c["ms"]) for c in churn]
        failed = [c for c in churn if c.get("rejoined_epoch") == "0"]
        print(f"churn: {len(churn)} evictions, each until the member is listed again: "
              f"median {statistics.median(took):.0f} ms, max {max(took)} ms; {len(failed)} did not rejoin")
    full = [e["all"] - e["created"] for n, e in epochs.items() if n > 1 and e["procs"] == len(outs)]
    print(f"epoch created -> every one of {members} members delivered it: {spread(full)}")

    kill_ms = times["kill"][0]
    final = min((n for n, e in epochs.items() if e["nodes"] == members - killed and e["created"] >= kill_ms),
                default=None)
    if final is None:
        print("kill: no epoch without the killed members")
    else:
        e = epochs[final]
        made = sorted(n for n, x in epochs.items() if x["created"] >= kill_ms)
        print(f"kill -9 of {killed} members: epoch {final} ({e['nodes']} nodes; {len(made)} epoch(s) after the kill: "
              f"{', '.join(epochs[n]['reason'][:60] for n in made)})")
        print(f"  created {e['created'] - kill_ms} ms after the kill (session timeout {session_ms} ms)")
        print(f"  at every surviving member {e['all'] - kill_ms} ms after the kill, "
              f"{e['all'] - e['created']} ms after it was created (target < 5000 ms)")
        if e["procs"] != survivors:
            print(f"  (reported by {e['procs']} of {survivors} surviving processes)")

    joined = {p: int(w[1]) for p, out in outs.items() for w in out if w[0] == "joined"}
    snaps = {}
    for step, who, rss_kb, ticks, epoch in lines(os.path.join(root, "snapshots")):
        snaps.setdefault(step, {})[who] = (int(rss_kb), int(ticks), int(epoch))
    print(f"memory (RSS; every member keeps {epochs_kept} epoch records, the newest in full, "
          f"the others as what changed):")
    for step in ("format", "churn1", "churn2"):
        snap = snaps.get(step)
        if not snap:
            continue
        procs = [p for p in snap if p != "zookeeper"]
        kb = sum(snap[p][0] for p in procs)
        n = sum(joined[int(p)] for p in procs)
        epoch = next(iter(snap.values()))[2]
        print(f"  after {step:7s} (epoch {epoch:3d}): members {kb / 1024:.0f} MiB for {n} = "
              f"{kb / n:.0f} KiB per member; ZooKeeper {snap['zookeeper'][0] / 1024:.0f} MiB")
    if "churn0" in snaps and "churn2" in snaps:
        a, b = snaps["churn0"], snaps["churn2"]
        epochs_made = next(iter(b.values()))[2] - next(iter(a.values()))[2]
        hz = os.sysconf("SC_CLK_TCK")
        members_cpu = sum(b[p][1] - a[p][1] for p in b if p != "zookeeper" and p in a) / hz
        zk_cpu = (b["zookeeper"][1] - a["zookeeper"][1]) / hz
        if epochs_made > 0:
            print(f"CPU per epoch during the churn ({epochs_made} epochs): members {members_cpu / epochs_made:.2f} s "
                  f"({members_cpu / epochs_made / members * 1000:.2f} ms per member), "
                  f"ZooKeeper {zk_cpu / epochs_made:.2f} s (ticks and reads included)")
    if "idle0" in snaps and "idle1" in snaps:
        a, b = snaps["idle0"], snaps["idle1"]
        hz = os.sysconf("SC_CLK_TCK")
        seconds = idle_s
        members_cpu = sum(b[p][1] - a[p][1] for p in b if p != "zookeeper" and p in a) / hz
        zk_cpu = (b["zookeeper"][1] - a["zookeeper"][1]) / hz
        print(f"CPU with no change ({seconds} s): members {members_cpu / seconds * 100:.0f}% of one core "
              f"({members_cpu / seconds / members * 1e6:.0f} us per member per second), "
              f"ZooKeeper {zk_cpu / seconds * 100:.0f}%")
    expired = 0
    for path in glob.glob(os.path.join(root, "members.*.log")):
        with open(path) as f:
            expired += sum(1 for line in f if "session" in line and "expired" in line)
    print(f"session expirations logged by the members (not the killed ones): {expired}")

    print("ZooKeeper (mntr):           znodes  data bytes  ephemerals  watches  connections")
    for step in ("format", "churn1", "churn2", "kill"):
        m = mntr(os.path.join(root, f"mntr.{step}"))
        if m:
            last = max((n for n, e in epochs.items() if e["created"] <= os.path.getmtime(
                os.path.join(root, f"mntr.{step}")) * 1000), default=0)
            print(f"  after {step:7s} (epoch {last:4d}) {m.get('zk_znode_count', '?'):>7s} "
                  f"{m.get('zk_approximate_data_size', '?'):>11s} {m.get('zk_ephemerals_count', '?'):>11s} "
                  f"{m.get('zk_watch_count', '?'):>8s} {m.get('zk_num_alive_connections', '?'):>12s}")


if __name__ == "__main__":
    main()
