"""The report of a run: one dict of plain values (what ``--json`` writes), the table printed
from it (plain or Markdown), and the plot of its ratios.

:func:`run` times the workloads (:func:`runner.compare`) and makes the report; a report saved
as JSON prints and plots again as it was (``--from-json``).
"""
import math
import os
import platform
import statistics
import sys
import time
from time import perf_counter

from .placement import cpu_model, pin_mode, processes, usable_cpus
from .runner import (C_PART, FASTMP, PEERS, STDLIB, compare, impl_of, load_lib, load_peer,
                     summary)

JSON_FORMAT = 1


def fmt_rate(rate):
    if rate is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.3g}{suffix}/s"
    return f"{rate:.3g}/s"


def _lib_entry(lib):
    kind = ("stdlib" if lib.name == STDLIB else "fastmp" if lib.name == FASTMP
            else lib.kind)
    entry = {"name": lib.name, "kind": kind, "available": lib.module is not None,
             "version": lib.version, "location": lib.note, "error": lib.error}
    if lib.kind == "peer":
        entry["for"] = PEERS[lib.name][2]
    return entry


def _fastmp_part(w, fastmp_lib, start_method):
    if fastmp_lib is None or fastmp_lib.module is None or w.probe is None:
        return "?"
    try:
        return impl_of(w.probe(fastmp_lib.module, fastmp_lib.module.get_context(start_method)))
    except Exception:  # noqa: BLE001 - the column says "?"
        return "?"


def _finite(x):
    return x is not None and math.isfinite(x)


def lib_names(workloads, libs=None, peers=True):
    """The libraries a run times, in the table's order (the stdlib, fastmp, the peers): those
    named in ``libs``, or by default the stdlib, fastmp and (with ``peers``) every peer that
    has a version of one of ``workloads``.  ValueError for a name that is none of these."""
    if libs is None:
        wanted = [p for p in PEERS if any(p in w.peers for w in workloads)]
        return [STDLIB, FASTMP] + (wanted if peers else [])
    unknown = [name for name in libs if name not in (STDLIB, FASTMP) and name not in PEERS]
    if unknown:
        raise ValueError(f"unknown librar{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(map(repr, unknown))}: choose among "
                         f"{', '.join([STDLIB, FASTMP] + list(PEERS))}")
    return [name for name in [STDLIB, FASTMP] + list(PEERS) if name in libs]


def load(name, start_method):
    """A library of :func:`lib_names` loaded (never raises; see runner.load_lib)."""
    return load_peer(name) if name in PEERS else load_lib(name, start_method)


def run(workloads, *, start_method="fork", rounds=5, round_time=0.25, scale=1.0,
        peers=True, timeout=120.0, progress=None, libs=None):
    """Time ``workloads`` for the stdlib, fastmp and (with ``peers``) the peers that apply,
    or for the libraries named in ``libs`` (see :func:`lib_names`); the ratios are to the
    stdlib.  Return the report: a dict of plain values, what ``--json`` writes."""
    t_start = time.time()
    names = lib_names(workloads, libs, peers)
    libs = [load(name, start_method) for name in names]
    wanted = [name for name in names if name in PEERS]
    # the "fastmp part" column says what fastmp hands out, timed or not
    fastmp_lib = next((lib for lib in libs if lib.name == FASTMP), None)
    if fastmp_lib is None:
        fastmp_lib = load_lib(FASTMP, start_method)
    t0 = perf_counter()
    results = compare(workloads, libs, start_method=start_method, rounds=rounds,
                      round_time=round_time, scale=scale, timeout=timeout,
                      progress=progress)
    elapsed = perf_counter() - t0
    rows = []
    by_name = {w.name: w for w in workloads}
    for res in results:
        w = by_name[res.workload]
        row = {"workload": res.workload, "group": res.group, "unit": res.unit,
               "descr": res.descr, "fastmp_part": _fastmp_part(w, fastmp_lib, start_method),
               "peers": [p for p in wanted if p in w.peers],
               "n": res.n, "rates": res.rates, "errors": res.errors,
               "median": {}, "ratio": {}, "spread": {}}
        for name, rates in res.rates.items():
            row["median"][name] = statistics.median(rates)
            if name == STDLIB:
                continue
            _, _, ratio, lo, hi = summary(res, STDLIB, name)
            if _finite(ratio):
                row["ratio"][name] = ratio
                row["spread"][name] = [lo, hi]
        rows.append(row)
    return {
        "format": JSON_FORMAT,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cpus(),
        "start_method": start_method,
        "pin": pin_mode(),
        "processes": processes(),
        "rounds": rounds,
        "round_time": round_time,
        "scale": scale,
        "peers_run": bool(peers),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)),
        "elapsed": elapsed,
        "libs": [_lib_entry(lib) for lib in libs],
        "results": rows,
        "failed": any(r["errors"] for r in rows),
    }


def _ratio_text(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def _spread_text(pair):
    if not pair:
        return "-"
    return f"{_ratio_text(pair[0])[:-1]}..{_ratio_text(pair[1])}"


def _markdown_table(rep, peer_cols, libs):
    head = ["Workload", "unit", "fastmp part", "stdlib", "fastmp", "fastmp / stdlib", "spread"]
    head += peer_cols
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + " |"]
    for row in rep["results"]:
        def rate(name):
            if name in row["errors"]:
                return "FAILED"
            med = row["median"].get(name)
            return fmt_rate(med) if med is not None else "-"
        ratio = row["ratio"].get(FASTMP)
        ratio_text = _ratio_text(ratio)
        if row["fastmp_part"] == C_PART and ratio is not None:
            ratio_text = f"**{ratio_text}**"
        cells = [f"`{row['workload']}`", row["unit"], row["fastmp_part"], rate(STDLIB),
                 rate(FASTMP), ratio_text, _spread_text(row["spread"].get(FASTMP))]
        for peer in peer_cols:
            if peer not in row["peers"]:
                cells.append("")
            elif not libs[peer]["available"]:
                cells.append("absent")
            elif peer in row["errors"]:
                cells.append("FAILED")
            else:
                cells.append(f"{rate(peer)} ({_ratio_text(row['ratio'].get(peer))})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def print_report(rep, file=sys.stdout, command=None, markdown=False):
    """The table, with the machine, the method and the libraries above it; with
    ``markdown``, the table as Markdown (for a README)."""
    p = lambda *a: print(*a, file=file)  # noqa: E731
    libs = {lib["name"]: lib for lib in rep["libs"]}
    p("== fastmp against the stdlib multiprocessing, side by side")
    if command:
        p(f"command: {command}")
    cpu = f", {rep['cpu']}" if rep.get("cpu") else ""
    p(f"python {rep['python']} ({rep['implementation']}) on {rep['system']}{cpu}: "
      f"{rep['cores']} cores ({rep['usable_cores']} usable); run at {rep['started']}")
    p(f"start method: {rep['start_method']}; per library a discarded warm-up, then "
      f"{rep['rounds']} rounds of about {rep['round_time']:g} s, libraries alternating, "
      f"order flipped every round; rate = median of the rounds")
    p(f"two-process workloads: --pin {rep['pin']}; pools and queue-fanin: "
      f"--processes {rep['processes']}")
    for lib in rep["libs"]:
        name = lib["name"]
        if lib["available"]:
            what = f" (for {lib['for']})" if lib.get("for") else ""
            p(f"  {name:16s} {lib['version'] or '?':10s} {lib['location']}{what}")
        elif lib["kind"] == "peer":
            p(f"  {name:16s} absent ({lib['error']}); for {lib['for']}: "
              f"pip install {PEERS[name][1]}  (or: pip install 'fastmp[bench]')")
        else:
            p(f"  {name:16s} UNAVAILABLE: {lib['error']}")
    if not rep.get("peers_run", True):
        p("  peers: not run (--no-peers)")
    p("")

    peer_cols = [lib["name"] for lib in rep["libs"] if lib["kind"] == "peer"]
    if markdown:
        for line in _markdown_table(rep, peer_cols, libs):
            p(line)
        p("")
        p(f"({rep['elapsed']:.1f} s)")
        file.flush()
        return
    head = (f"{'workload':22s} {'unit':16s} {'fastmp part':18s} {'stdlib':>9s} "
            f"{'fastmp':>9s} {'fastmp/stdlib':>13s} {'spread':>13s}")
    for peer in peer_cols:
        head += f"  {peer:>16s}"
    p(head)
    p("-" * len(head))

    def cell(row, name):
        if name in row["errors"]:
            return "FAILED"
        med = row["median"].get(name)
        return fmt_rate(med) if med is not None else "-"

    for row in rep["results"]:
        fm_ratio = row["ratio"].get(FASTMP)
        line = (f"{row['workload']:22s} {row['unit']:16s} {row['fastmp_part']:18s} "
                f"{cell(row, STDLIB):>9s} {cell(row, FASTMP):>9s} "
                f"{_ratio_text(fm_ratio) if FASTMP not in row['errors'] else 'FAILED':>13s} "
                f"{_spread_text(row['spread'].get(FASTMP)):>13s}")
        for peer in peer_cols:
            if peer not in row["peers"]:
                text = ""
            elif not libs[peer]["available"]:
                text = "absent"
            elif peer in row["errors"]:
                text = "FAILED"
            else:
                text = f"{cell(row, peer)} {_ratio_text(row['ratio'].get(peer))}"
            line += f"  {text:>16s}"
        p(line.rstrip())
    for row in rep["results"]:
        for name, msg in row["errors"].items():
            p(f"  {row['workload']}: {name} failed: {msg}")
    p("")
    p("rates are per second, each the median of the rounds; fastmp/stdlib = ratio of the "
      "medians (higher is")
    p("better for fastmp); spread = lowest..highest ratio of paired rounds (a wide spread "
      "means a noisy machine);")
    p("fastmp part: C = fastmp's own C object; stdlib (not C yet) = fastmp hands out the "
      "stdlib's object,")
    p("so the ratio is about 1 and shows the noise; a peer's column is its rate and its "
      "ratio to the stdlib.")
    p(f"({rep['elapsed']:.1f} s)")
    file.flush()


class PlotError(RuntimeError):
    """--plot cannot be done (matplotlib missing)."""


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(f"--plot needs matplotlib, which does not import here ({exc}); "
                        f"install it with `pip install matplotlib` "
                        f"or `pip install 'fastmp[bench]'`") from None
    return plt


def plot(rep, path):
    """A horizontal bar chart of the ratios to the stdlib, log scale, to ``path``: per
    workload one bar for fastmp and one per peer that ran it, from 1x to the ratio, with the
    spread of the rounds as an error bar."""
    plt = pyplot()
    from matplotlib.patches import Patch
    rows = [r for r in rep["results"] if r["ratio"]]
    if not rows:
        raise PlotError("nothing to plot: no workload has a ratio")
    peers = [lib["name"] for lib in rep["libs"]
             if lib["kind"] == "peer" and lib["available"]]
    series = [FASTMP] + [p for p in peers if any(p in r["ratio"] for r in rows)]
    colors = {"faster-fifo": "#e69f00", "mpire": "#009e73", "loky": "#cc79a7",
              "UltraDict": "#d55e00"}
    c_color, not_c_color = "#0b5394", "#a0a0a0"
    bar, gap = 0.32, 0.4
    # lay the rows out top to bottom; a row is as tall as the bars it has
    layout, y = [], 0.0
    for row in rows:
        names = [name for name in series if name in row["ratio"]]
        layout.append((row, names, y))
        y += len(names) * bar + gap
    total = y
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.42 * total))
    values, ticks, labels = [], [], []
    prev_group = None
    for row, names, top in layout:
        if prev_group is not None and row["group"] != prev_group:
            ax.axhline(total - (top - gap / 2), color="#dddddd", linewidth=0.8)
        prev_group = row["group"]
        centre = total - (top + len(names) * bar / 2)
        ticks.append(centre)
        labels.append(row["workload"])
        for i, name in enumerate(names):
            ratio = row["ratio"][name]
            lo, hi = row["spread"].get(name, [ratio, ratio])
            values += [ratio, lo, hi]
            yb = total - (top + (i + 0.5) * bar)
            if name == FASTMP:
                color = c_color if row["fastmp_part"] == C_PART else not_c_color
            else:
                color = colors.get(name, "#555555")
            ax.barh(yb, ratio - 1, left=1, height=bar * 0.9, color=color,
                    xerr=[[max(0.0, ratio - lo)], [max(0.0, hi - ratio)]],
                    error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#444444"})
            if ratio >= 1:
                ax.text(max(ratio, hi) * 1.06, yb, _ratio_text(ratio), va="center",
                        ha="left", fontsize=7)
            else:
                ax.text(min(ratio, lo) / 1.06, yb, _ratio_text(ratio), va="center",
                        ha="right", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(min(0.5, min(values) / 3), max(2.0, max(values) * 4))
    ax.set_ylim(gap / 2, total + gap / 2)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set_xlabel("rate / stdlib multiprocessing rate (log scale; right of 1x: faster "
                  "than the stdlib)")
    ax.grid(axis="x", which="major", linewidth=0.4, alpha=0.5)
    handles = [Patch(color=c_color, label="fastmp (its C object)"),
               Patch(color=not_c_color, label="fastmp (the stdlib's object: not C yet)")]
    handles += [Patch(color=colors.get(p, "#555555"), label=p) for p in series[1:]]
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.95)
    cpu = f" ({rep['cpu']})" if rep.get("cpu") else ""
    ax.set_title(f"python -m fastmp.bench: Python {rep['python']}, {rep['cores']} cores{cpu}, "
                 f"{rep['start_method']}, --pin {rep['pin']}, --processes {rep['processes']}\n"
                 f"median of {rep['rounds']} rounds; error bars span the lowest..highest "
                 f"per-round ratio", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
