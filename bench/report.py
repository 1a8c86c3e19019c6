#!/usr/bin/python3
"""Summarises a bench/run.sh results directory as tables.

    bench/report.py RESULTS_DIR [--markdown]

RESULTS_DIR holds meta.json (servers, jobs, rounds, memory figures) and, per
job, JOB/SERVER-rROUND.json (fio --output-format=json, run with
--lat_percentiles=1 so that completion-latency percentiles include submission)
plus JOB/SERVER-rROUND.cpu ("cpu-ticks ticks-per-second wall-ms" of the
server process while fio ran). A missing JSON is a failed run: the cell shows
"FAIL" when no round succeeded, and "n=K" counts the rounds that did.

Each figure is the median over rounds. "kelpied/best" is, on the row of each
kelpied target (kelpied: one node; kelpied-3n: three nodes, copies 3), its IOPS
over the better reference's (qemu-nbd or nbdkit); > 1 means kelpied is faster.
With kelpied-3n in the run, issue 3's targets for it are checked below the
table: 4k randread >= 0.8x and 4k randwrite >= 0.4x the better reference.
"srv CPU" is the server process's CPU time over the run's wall time, in
percent of one core; "CPU/IO" is that CPU time per I/O (the ramp's I/Os
are not counted, so it is a slight overestimate), the figure least disturbed
by other load on the machine. "spread" is (max - min) / median of a server's IOPS
across rounds: a rough gauge of the noise on this machine.
"""

import json
import statistics
import sys
from pathlib import Path

REFERENCES = ("qemu-nbd", "nbdkit")
CLUSTER = "kelpied-3n"
# Issue 3: the 3-copy cluster against the better reference, on this 2-core host.
CLUSTER_TARGETS = (("randread", 0.8), ("randwrite", 0.4))


def load_fio(path):
    """One fio JSON file -> dict of the figures of its main direction."""
    text = path.read_text()
    # fio's nbd engine may print a line before the JSON on some versions.
    text = text[text.index("{"):]
    job = json.loads(text)["jobs"][0]
    if job.get("error"):
        return None
    side = max(("read", "write"), key=lambda d: job[d]["io_bytes"])
    data = job[side]
    lat = data["lat_ns"]
    percentiles = lat.get("percentile", {})
    return {
        "iops": data["iops"],
        "mib_s": data["bw_bytes"] / 2**20,
        "lat_mean_ns": lat["mean"],
        "lat_p99_ns": percentiles.get("99.000000"),
        "io_bytes": data["io_bytes"],
        "runtime_ms": data["runtime"],
    }


def load_cpu(path):
    """Server CPU during the run, in percent of one core, or None."""
    if not path.exists():
        return None
    fields = path.read_text().split()
    if len(fields) != 3:
        return None
    ticks, per_second, wall_ms = (int(f) for f in fields)
    if wall_ms <= 0 or per_second <= 0:
        return None
    return 100.0 * ticks / per_second / (wall_ms / 1000.0)


def collect(results, job, server, rounds):
    """Medians over rounds for one (job, server), or None if all failed."""
    runs = []
    for path in sorted((results / job).glob(f"{server}-r*.json")):
        figures = load_fio(path)
        if figures is None:
            continue
        figures["cpu_pct"] = load_cpu(path.with_suffix(".cpu"))
        figures["cpu_us_per_io"] = (
            figures["cpu_pct"] / 100.0 * 1e6 / figures["iops"]
            if figures["cpu_pct"] is not None and figures["iops"] else None)
        runs.append(figures)
    if not runs:
        return None

    def median(key):
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    iops = [r["iops"] for r in runs]
    summary = {key: median(key) for key in runs[0]}
    summary["n"] = len(runs)
    summary["expected_n"] = rounds
    summary["spread_pct"] = (
        100.0 * (max(iops) - min(iops)) / summary["iops"]
        if len(iops) > 1 and summary["iops"] else None
    )
    return summary


def fmt_count(value):
    if value is None:
        return "-"
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def fmt_ns(value):
    if value is None:
        return "-"
    if value >= 1e9:
        return f"{value / 1e9:.2f}s"
    if value >= 1e6:
        return f"{value / 1e6:.2f}ms"
    if value >= 1e3:
        return f"{value / 1e3:.0f}us" if value >= 1e5 else f"{value / 1e3:.1f}us"
    return f"{value:.0f}ns"


def fmt_pct(value):
    return "-" if value is None else f"{value:.0f}%"


def is_kelpied(server):
    return server.startswith("kelpied")


def ratio_value(row, servers, server):
    """server's IOPS over the better reference's, or None."""
    refs = [row[s]["iops"] for s in servers if s in REFERENCES and row.get(s)]
    if not row.get(server) or not refs or max(refs) == 0:
        return None
    return row[server]["iops"] / max(refs)


def ratio(row, servers, server):
    value = ratio_value(row, servers, server)
    return "-" if value is None else f"{value:.2f}x"


def cluster_targets(table, servers, jobs):
    """Lines judging issue 3's targets for kelpied-3n, one per 4k random job."""
    lines = []
    for job in jobs:
        for kind, target in CLUSTER_TARGETS:
            if not job.startswith(kind + "-4k"):
                continue
            value = ratio_value(table[job], servers, CLUSTER)
            verdict = ("no figure" if value is None
                       else "met" if value >= target else "NOT met")
            shown = "-" if value is None else f"{value:.2f}x"
            lines.append(f"  {job}: {CLUSTER} {shown} the best reference "
                         f"(target >= {target}x): {verdict}")
    return lines


def cell(summary, key, formatter):
    if summary is None:
        return "FAIL" if key == "iops" else "-"
    text = formatter(summary[key])
    if key == "iops" and summary["n"] < summary["expected_n"]:
        text += f" n={summary['n']}"
    return text


class Table:
    """Rows of strings, printed aligned as text or as a Markdown table."""

    def __init__(self, header, left_columns=1):
        self.header = header
        self.left_columns = left_columns
        self.rows = []

    def add(self, row):
        self.rows.append([str(c) for c in row])

    def render(self, markdown=False):
        if markdown:
            lines = ["| " + " | ".join(self.header) + " |"]
            lines.append("|" + "|".join(["---"] * self.left_columns
                                        + ["---:"] * (len(self.header) - self.left_columns)) + "|")
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
            return "\n".join(lines)
        widths = [max(len(r[i]) for r in [self.header] + self.rows)
                  for i in range(len(self.header))]

        def line(r):
            return "  ".join(
                c.ljust(w) if i < self.left_columns else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths))).rstrip()

        out = [line(self.header), "  ".join("-" * w for w in widths)]
        return "\n".join(out + [line(r) for r in self.rows])


def main(argv):
    markdown = "--markdown" in argv
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    results = Path(args[0])
    meta = json.loads((results / "meta.json").read_text())
    servers, rounds = meta["servers"], meta["rounds"]
    jobs = ["fill"] + meta["jobs"]
    table = {job: {s: collect(results, job, s, 1 if job == "fill" else rounds)
                   for s in servers} for job in jobs}

    for key, value in meta.get("environment", {}).items():
        print(f"{key}: {value}" + ("  " if markdown else ""))
    print()
    print(f"Medians of {rounds} rounds of {meta['runtime_s']} s "
          f"(+{meta['ramp_s']} s ramp); export {meta['export_size']}, "
          f"working set {meta['workset']}; fill: one sequential pass.\n")

    main_table = Table(["job", "server", "IOPS", "MiB/s", "mean lat", "p99 lat",
                        "srv CPU", "CPU/IO", "spread", "kelpied/best"], left_columns=2)
    for job in jobs:
        row = table[job]
        for index, s in enumerate(servers):
            main_table.add([
                job if index == 0 else "", s,
                cell(row[s], "iops", fmt_count),
                cell(row[s], "mib_s", lambda v: "-" if v is None else f"{v:.0f}"),
                cell(row[s], "lat_mean_ns", fmt_ns),
                cell(row[s], "lat_p99_ns", fmt_ns),
                cell(row[s], "cpu_pct", fmt_pct),
                cell(row[s], "cpu_us_per_io", lambda v: "-" if v is None else f"{v:.0f}us"),
                cell(row[s], "spread_pct", fmt_pct),
                ratio(row, servers, s) if is_kelpied(s) else "",
            ])
    print(main_table.render(markdown))
    if CLUSTER in servers:
        print(f"\nIssue 3 targets ({CLUSTER}: 3 nodes on this host, copies 3):\n")
        print("\n".join(cluster_targets(table, servers, meta["jobs"])))

    summed = f"; {CLUSTER}: the sum over its processes" if CLUSTER in servers else ""
    print(f"\nMemory (idle = VmRSS once serving, peak = VmHWM after all jobs{summed}):\n")
    memory_table = Table(["server", "idle RSS", "peak RSS"])
    for s in servers:
        memory = meta["memory_kb"].get(s, {})

        def mib(kb):
            return "-" if kb is None else f"{kb / 1024:.1f} MiB"

        memory_table.add([s, mib(memory.get("idle_rss")), mib(memory.get("peak_rss"))])
    print(memory_table.render(markdown))


if __name__ == "__main__":
    main(sys.argv[1:])
