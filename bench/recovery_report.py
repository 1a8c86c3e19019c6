#!/usr/bin/python3
"""Summarises a bench/recovery_bench.sh results directory.

    bench/recovery_report.py RESULTS_DIR

RESULTS_DIR holds meta.tsv (key TAB value: cluster shape, object size, the
epoch before the kill, and the Unix-ms times of the kill and of the poll that
found every node "done"), fill.json, before.json and during.json (fio
--output-format=json), during_iops.1.log (fio's IOPS per second, Unix-ms
stamps), polls.jsonl (one line a second: node 1's `cluster info --json` and
`node recovery --json`) and, if the check ran, check.json.

Figures:
- re-replicated MiB/s: the sum over nodes of "done" objects at the new epoch x
  the object size, over the time from the kill to the poll that found every
  node done (polls are a second apart, so this is up to ~1 s long);
- randread during recovery: the mean of fio's per-second IOPS whose second
  lies mostly between the kill and that poll, over the randread run before
  (issue 3's target: >= 50%).
"""

import json
import sys
from pathlib import Path

TARGET_SHARE = 0.5
MIB = 2**20


def load_meta(results):
    meta = {}
    for line in (results / "meta.tsv").read_text().splitlines():
        key, _, value = line.partition("\t")
        meta[key] = value
    return meta


def load_fio(path):
    """fio JSON -> (its main direction's figures) or None."""
    if not path.exists():
        return None
    text = path.read_text()
    if "{" not in text:
        return None
    job = json.loads(text[text.index("{"):])["jobs"][0]
    side = max(("read", "write"), key=lambda d: job[d]["io_bytes"])
    data = job[side]
    return {"iops": data["iops"], "mib_s": data["bw_bytes"] / MIB,
            "lat_mean_ns": data["lat_ns"]["mean"],
            "lat_p99_ns": data["lat_ns"].get("percentile", {}).get("99.000000"),
            "error": job.get("error", 0)}


def load_iops_log(path):
    """[(end of the interval in Unix ms, IOPS over it)], summed over directions.

    fio logs once at least a second has passed *and* an I/O completes, so an
    interval with no completion merges into the next: it may be longer."""
    per_time = {}
    if path.exists():
        for line in path.read_text().splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 2:
                t = int(fields[0])
                per_time[t] = per_time.get(t, 0) + int(fields[1])
    return sorted(per_time.items())


def load_polls(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def intervals(seconds):
    """[(start ms, end ms, IOPS)] from the log; the first interval is taken as 1 s."""
    out, previous = [], None
    for t, v in seconds:
        out.append((t - 1000 if previous is None else previous, t, v))
        previous = t
    return out


def weighted_mean(spans):
    """I/Os over time of [(start, end, IOPS)], or None."""
    total_ms = sum(end - start for start, end, _ in spans)
    if total_ms <= 0:
        return None
    return sum(v * (end - start) for start, end, v in spans) / total_ms


def fmt_iops(value):
    if value is None:
        return "-"
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def fmt_us(ns):
    return "-" if ns is None else f"{ns / 1000:.0f} us"


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    results = Path(argv[0])
    meta = load_meta(results)
    object_size = int(meta["object_size"])
    kill_ms = int(meta["kill_ms"])
    done_ms = int(meta["done_ms"]) if meta.get("done_ms") else None
    epoch_before = int(meta["epoch_before"])
    fill = load_fio(results / "fill.json")
    before = load_fio(results / "before.json")
    during = load_fio(results / "during.json")
    seconds = load_iops_log(results / "during_iops.1.log")
    polls = load_polls(results / "polls.jsonl")

    print(f"Recovery (issue 3): {meta['nodes']} kelpied on this host ({meta['node_args']}), "
          f"copies {meta['copies']}; {meta['kelpied']}")
    print(f"load average (1, 5, 15 min): {meta.get('load_at_start', '?')} at start, "
          f"{meta.get('load_at_end', '?')} at end")
    print(f"Data: {meta['data']} written through node 1 (sequential 1 MiB, iodepth 8): "
          + ("FAILED" if fill is None else f"{fill['mib_s']:.0f} MiB/s"))
    print(f"Killed: node {meta['kill_node']} ({meta['killed_uuid']}), kill -9, "
          f"at epoch {epoch_before}")
    print()

    # Re-replication.
    new_epoch_ms = next((p["t_ms"] for p in polls
                         if p["info"] and p["info"]["epoch"] > epoch_before), None)
    last = polls[-1] if polls else None
    if last and last["recovery"]:
        done_objects = sum(r["done"] for r in last["recovery"])
        to_recover = sum(r["to_recover"] for r in last["recovery"])
    else:
        done_objects = to_recover = 0
    peak_rate = max((sum(r["rate_mib_s"] for r in p["recovery"])
                     for p in polls if p["recovery"]), default=0.0)
    if new_epoch_ms is not None:
        print(f"New epoch ({meta.get('epoch_after', '?')}) first seen by a poll "
              f"{(new_epoch_ms - kill_ms) / 1000:.1f} s after the kill.")
    if done_ms is None:
        print(f"Recovery NOT done by the deadline: {done_objects}/{to_recover} objects "
              f"pulled when the polls stopped.")
        rate = None
    else:
        wall_s = (done_ms - kill_ms) / 1000
        mib = done_objects * object_size / MIB
        rate = mib / wall_s if wall_s > 0 else None
        per_node = ", ".join(f"{r['node'][:8]} {r['done']}" for r in last["recovery"])
        print(f"Every node done {wall_s:.1f} s after the kill: {done_objects} objects "
              f"pulled ({per_node}) x {object_size / MIB:.0f} MiB = {mib:.0f} MiB.")
        print(f"RE-REPLICATED: {rate:.1f} MiB/s (kill to every node done)"
              + (f"; {mib / ((done_ms - new_epoch_ms) / 1000):.1f} MiB/s from the new epoch"
                 if new_epoch_ms and done_ms > new_epoch_ms else "")
              + f"; peak of the summed rate_mib_s: {peak_rate:.1f} MiB/s.")
    print()

    # Client reads: an interval counts where most of it lies.
    def mid(span):
        return (span[0] + span[1]) / 2

    spans = intervals(seconds)
    window_end = done_ms if done_ms is not None else (seconds[-1][0] if seconds else kill_ms)
    lead = [s for s in spans[1:] if mid(s) < kill_ms]  # the first second has the connect
    during_recovery = [s for s in spans if kill_ms <= mid(s) <= window_end]
    after = [s for s in spans if mid(s) > window_end]
    mean = weighted_mean(during_recovery)
    print(f"4k randread, iodepth {meta['iodepth']}, through node 1:")
    if before:
        print(f"  before (separate run): {fmt_iops(before['iops'])} IOPS, "
              f"mean lat {fmt_us(before['lat_mean_ns'])}, p99 {fmt_us(before['lat_p99_ns'])}")
    if lead:
        print(f"  same run, before the kill ({len(lead)} s): {fmt_iops(weighted_mean(lead))} IOPS")
    if during:
        print(f"  whole 'during' run: {fmt_iops(during['iops'])} IOPS, "
              f"p99 {fmt_us(during['lat_p99_ns'])}, fio error {during['error']}")
    if mean is not None:
        length_s = sum(end - start for start, end, _ in during_recovery) / 1000
        below = sum(end - start for start, end, v in during_recovery
                    if before and v < 0.1 * before["iops"]) / 1000
        print(f"  during recovery ({length_s:.0f} s): mean {fmt_iops(mean)} IOPS, "
              f"lowest interval {fmt_iops(min(v for _, _, v in during_recovery))}, "
              f"{below:.0f} s below 10% of before")
    if after:
        print(f"  after recovery ({len(after)} s): {fmt_iops(weighted_mean(after))} IOPS")
    print("  per interval from the kill (s after the kill: IOPS): "
          + " ".join(f"{(end - kill_ms) / 1000:.0f}:{fmt_iops(v)}"
                     for start, end, v in spans if mid((start, end)) >= kill_ms))
    if mean is not None and before and before["iops"]:
        share = mean / before["iops"]
        verdict = "met" if share >= TARGET_SHARE else "NOT met"
        print(f"RANDREAD DURING RECOVERY: {100 * share:.0f}% of before "
              f"(target >= {100 * TARGET_SHARE:.0f}%): {verdict}")
    else:
        print("RANDREAD DURING RECOVERY: no figure")

    check = results / "check.json"
    if check.exists():
        print()
        status = meta.get("check_status", "?")
        try:
            doc = json.loads(check.read_text())
            objects, copies = doc["objects_checked"], doc["copies_checked"]
            per_object = f"{copies / objects:.2f}" if objects else "-"
            print(f"Check after recovery (`kelpie vdi check`, {meta.get('check_s', '?')} s, "
                  f"exit {status}): {objects} objects, {copies} good copies "
                  f"({per_object} per object), {len(doc['issues'])} issues.")
        except (ValueError, KeyError):
            print(f"Check after recovery: exit {status}, no report: "
                  f"{(results / 'check.err').read_text().strip()[:300]}")


if __name__ == "__main__":
    main(sys.argv[1:])
