#!/usr/bin/python3
"""Summarises a bench/lifecycle_bench.sh results directory as tables.

    bench/lifecycle_report.py RESULTS_DIR

RESULTS_DIR holds:
  meta.json        machine, versions, parameters, load average
  samples.tsv      one measurement a line, tab-separated:
                     latency KIND FILL SEQ MICROSECONDS   (KIND: snapshot, clone,
                                                           node info: the floor)
                     fill LABEL MICROSECONDS              (fio JSON in fill-LABEL.json)
                     stream KIND LABEL BYTES MICROSECONDS (KIND: backup, restore)
  randwrite-{plain,clone}-rN.json      fio JSON of round N
  randwrite-{plain,clone}-rN_iops.1.log  fio's IOPS log, one line per second

A missing sample (a failed command) shows as "-" or "n=K" (K samples of the
expected number). Latency is the wall time of the kelpie process in ms;
"first" is the first snapshot after the fill (it also flushes the fill's
dirty objects) or the first clone. "clone/plain" < 1 means writes to a fresh
clone are slower; "first 1 s" and "last 1 s" are the IOPS of the first and
last second of the run: the clone copies its objects on first write, so the
first second shows that cost and the last one what is left of it. "spread"
is (max - min) / median over rounds, a rough gauge of the noise on this machine.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from report import Table  # bench/report.py, beside this file

LATENCY_TARGET_MS = 100.0


def parse_size(text):
    """'64M', '1G' -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def fmt_size(size_bytes):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes >= scale:
            value = size_bytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size_bytes} B"


def fmt(value, pattern="{:.1f}"):
    return "-" if value is None else pattern.format(value)


def load_samples(results):
    latency = defaultdict(list)  # (kind, fill) -> [ms in sequence order]
    fills = {}  # label -> seconds
    streams = {}  # (kind, label) -> (bytes, seconds)
    for line in (results / "samples.tsv").read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == "latency":
            latency[(fields[1], fields[2])].append(int(fields[4]) / 1000.0)
        elif fields[0] == "fill":
            fills[fields[1]] = int(fields[2]) / 1e6
        elif fields[0] == "stream":
            streams[(fields[1], fields[2])] = (int(fields[3]), int(fields[4]) / 1e6)
    return latency, fills, streams


def load_fio(path):
    """One fio JSON file -> the figures of its write side, or None."""
    if not path.exists():
        return None
    text = path.read_text()
    text = text[text.index("{"):]  # fio's nbd engine may print a line first
    job = json.loads(text)["jobs"][0]
    if job.get("error"):
        return None
    write = job["write"]
    return {
        "iops": write["iops"],
        "io_bytes": write["io_bytes"],
        "mib_s": write["bw_bytes"] / 2**20,
        "lat_p99_ns": write["lat_ns"].get("percentile", {}).get("99.000000"),
    }


def per_second_iops(path):
    """The IOPS of each 1 s window of a fio IOPS log, in order ([] if none)."""
    if not path.exists():
        return []
    values = []
    for line in path.read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 2 and fields[0].isdigit():
            values.append(float(fields[1]))
    return values


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def latency_section(meta, latency, fills, results):
    repeats = int(meta["repeats"])
    print(f"1. Snapshot and clone latency: wall time of `kelpie vdi snapshot|clone`, ms, "
          f"{repeats} each (target < {LATENCY_TARGET_MS:.0f} ms)")
    table = Table(["written", "fill MiB/s", "floor median",
                   "snapshot median", "min", "first", "max",
                   "clone median", "min", "first", "max", "medians < target"])
    labels = sorted({fill for kind, fill in latency if kind != "node info"}, key=parse_size)
    for label in labels:
        row = [f"{fmt_size(parse_size(label))} of {meta['vdi_size']}"]
        fio = load_fio(results / f"fill-{label}.json")
        row.append(fmt(fio["io_bytes"] / 2**20 / fills[label], "{:.0f}")
                   if fio and fills.get(label) else "-")
        row.append(fmt(median(latency.get(("node info", label), []))))
        worst = []
        for kind in ("snapshot", "clone"):
            values = latency.get((kind, label), [])
            med = median(values)
            cell = fmt(med)
            if values and len(values) < repeats:
                cell += f" n={len(values)}"
            row += [cell, fmt(min(values) if values else None),
                    fmt(values[0] if values else None), fmt(max(values) if values else None)]
            worst.append(med)
        row.append("-" if None in worst else
                   ("yes" if max(worst) < LATENCY_TARGET_MS else "NO"))
        table.add(row)
    print(table.render())
    print("floor: `kelpie node info` (process start + one admin call), timed before each "
          "snapshot and clone.\nThe first snapshot after a fill also flushes that fill's "
          "dirty objects.\n")


def cow_section(meta, results):
    rounds = int(meta["rounds"])
    print(f"2. Copy-on-write cost: 4k randwrite, iodepth 32, {meta['runtime_s']} s, no ramp, "
          f"first {meta['cow_region']} of the VDI; median of {rounds} rounds, order alternating, "
          f"a fresh clone each round")
    per_label = {}
    table = Table(["VDI", "IOPS", "first 1 s", "last 1 s", "p99 lat ms", "spread", "rounds"])
    titles = (("plain", "plain (owns its data)"), ("clone", "fresh clone of a snapshot"))
    for label, title in titles:
        runs = []
        for r in range(1, rounds + 1):
            fio = load_fio(results / f"randwrite-{label}-r{r}.json")
            if fio:
                seconds = per_second_iops(results / f"randwrite-{label}-r{r}_iops.1.log")
                fio["first_iops"] = seconds[0] if seconds else None
                fio["last_iops"] = seconds[-1] if seconds else None
                runs.append(fio)
        iops = [r["iops"] for r in runs]
        summary = {
            "iops": median(iops),
            "first_iops": median([r["first_iops"] for r in runs]),
            "last_iops": median([r["last_iops"] for r in runs]),
            "p99_ms": median([r["lat_p99_ns"] / 1e6 if r["lat_p99_ns"] else None for r in runs]),
        }
        spread = (100.0 * (max(iops) - min(iops)) / summary["iops"]
                  if len(iops) > 1 and summary["iops"] else None)
        per_label[label] = summary
        table.add([title, fmt(summary["iops"], "{:.0f}"), fmt(summary["first_iops"], "{:.0f}"),
                   fmt(summary["last_iops"], "{:.0f}"), fmt(summary["p99_ms"], "{:.2f}"),
                   fmt(spread, "{:.0f}%"),
                   f"{len(runs)}/{rounds}"])
    plain, clone = per_label["plain"], per_label["clone"]

    def ratio(key):
        if plain[key] and clone[key] is not None:
            return f"{clone[key] / plain[key]:.2f}"
        return "-"

    table.add(["clone / plain", ratio("iops"), ratio("first_iops"), ratio("last_iops"),
               "", "", ""])
    print(table.render() + "\n")


def stream_section(streams):
    print("3. Backup and restore: stream bytes / wall time of the kelpie command")
    table = Table(["stream", "bytes", "backup s", "backup MiB/s", "restore s", "restore MiB/s"])
    for label, title in (("full", "full, 1 GiB written"), ("diff", "differential, 64 MiB changed")):
        row = [title]
        backup, restore = streams.get(("backup", label)), streams.get(("restore", label))
        size = (backup or restore or (None, None))[0]
        row.append("-" if size is None else fmt_size(size))
        for sample in (backup, restore):
            if sample is None:
                row += ["-", "-"]
            else:
                stream_bytes, seconds = sample
                row += [f"{seconds:.2f}", f"{stream_bytes / 2**20 / seconds:.0f}"]
        table.add(row)
    print(table.render())
    print("restore spools stdin to $TMPDIR (/var/tmp) and verifies it before writing; "
          "the differential restore goes into the VDI the full one was restored into.")


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    results = Path(argv[0])
    meta = json.loads((results / "meta.json").read_text())
    latency, fills, streams = load_samples(results)
    print("Kelpie VDI lifecycle benchmark (bench/lifecycle_bench.sh)")
    for key in ("machine", "kernel", "filesystem", "fio", "kelpied",
                "load average (1, 5, 15 min) at start", "load average (1, 5, 15 min) at end",
                "wall time"):
        if key in meta:
            print(f"{key}: {meta[key]}")
    print()
    latency_section(meta, latency, fills, results)
    cow_section(meta, results)
    stream_section(streams)


if __name__ == "__main__":
    main(sys.argv[1:])
