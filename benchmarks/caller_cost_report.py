"""The caller-cost report: per-call numbers from the raw results of
:func:`benchmarks.caller_cost.run`, printed as tables (roxxel vs. the
reference; roxxel alive vs. collector dead) with notes, and the check that
no record was lost."""

from __future__ import annotations

import os
import platform
from typing import Any

from .caller_cost_worker import IMPLS, MODES
from .workload import APIS

__all__ = [
    "METRIC_ROWS",
    "ROW_NAMES",
    "DEAD_ROWS",
    "DEAD_ROW_NAMES",
    "DEAD_SECTION",
    "format_table",
    "format_dead_tables",
    "records_missing",
    "format_size",
]


# The rows of the tables, per API: roxxel vs. the reference ...
METRIC_ROWS = (
    "mean incl. close",
    "mean loop only",
    "cpu logging process",
    "cpu child processes",
    "p50",
    "p99",
    "p99.9",
    "max",
)
ROW_NAMES = tuple(f"{api} {row}" for api in APIS for row in METRIC_ROWS)
# ... and roxxel alive vs. collector dead, one table per buffer bound.
DEAD_ROWS = (
    "mean loop only",
    "cpu loop only",
    "cpu incl. close",
    "p50",
    "p99",
    "p99.9",
    "max",
    "close()",
)
DEAD_ROW_NAMES = tuple(f"{api} {row}" for api in APIS for row in DEAD_ROWS)
DEAD_SECTION = "collector dead (roxxel)"
# Issue 17: roxxel's loop at most this many times the deque-append floor.
LOOP_BUDGET = 1.4


# -- units --------------------------------------------------------------------


def _us(value: float) -> str:
    """Microseconds, with fewer decimals the larger the value."""
    if value >= 1000:
        return f"{value:,.0f} µs"
    if value >= 100:
        return f"{value:.1f} µs"
    return f"{value:.2f} µs"


def _ratio(ours: float, reference: float) -> str:
    """``reference / ours``, e.g. ``2.2x`` (two decimals below 0.1, so never ``0.0x``)."""
    if ours <= 0 or reference <= 0:
        return "-"
    ratio = reference / ours
    return f"{ratio:.1f}x" if ratio >= 0.095 else f"{ratio:.2f}x"


def format_size(nbytes: float) -> str:
    """``nbytes`` in MiB, KiB or B, e.g. ``256 MiB``, ``1.5 MiB``, ``64 KiB``."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if nbytes >= scale:
            value = nbytes / scale
            return (
                f"{value:,.0f} {unit}"
                if value >= 10 or value.is_integer()
                else f"{value:.1f} {unit}"
            )
    return f"{nbytes:,.0f} B"


def _ms(value_us: float) -> str:
    """Microseconds written as milliseconds (for close(), which takes that long)."""
    value = value_us / 1e3
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


# -- roxxel vs. the reference -------------------------------------------------


def _values_us(case: dict[str, Any]) -> dict[str, float]:
    """The METRIC_ROWS of one case, in µs per call; percentiles less the timer's median."""
    tp, lat = case["throughput"], case["latency"]
    n_tp = tp["n"]
    timer = lat["overhead_p50_ns"]
    return {
        "mean incl. close": tp["total_ns"] / n_tp / 1e3,
        "mean loop only": tp["loop_ns"] / n_tp / 1e3,
        "cpu logging process": tp["cpu_self_ns"] / n_tp / 1e3,
        "cpu child processes": tp["cpu_children_ns"] / n_tp / 1e3,
        "p50": max(0, lat["p50_ns"] - timer) / 1e3,
        "p99": max(0, lat["p99_ns"] - timer) / 1e3,
        "p99.9": max(0, lat["p999_ns"] - timer) / 1e3,
        "max": max(0, lat["max_ns"] - timer) / 1e3,
    }


def format_table(results: dict[str, Any]) -> str:
    """The side-by-side table, then notes (timer overhead, GC, slowest calls, losses)."""
    n = results[IMPLS[0]][APIS[0]]["throughput"]["n"]
    lines = [
        f"caller cost per call, {n:,} calls per case; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}",
        "",
        f"{'case':<42}{'roxxel':>12}{'reference':>13}{'ratio ref/ours':>16}",
    ]
    for api in APIS:
        ours = _values_us(results["roxxel"][api])
        ref = _values_us(results["reference"][api])
        for row in METRIC_ROWS:
            lines.append(
                f"{api + ' ' + row:<42}{_us(ours[row]):>12}{_us(ref[row]):>13}"
                f"{_ratio(ours[row], ref[row]):>16}"
            )
        floor = results.get("floor", {}).get(api)
        if floor:
            floor_us = floor["loop_ns"] / floor["n"] / 1e3
            loop = ours["mean loop only"] / floor_us
            budget = "met" if loop <= LOOP_BUDGET else "MISSED"
            lines.append(
                f"{api + ' deque-append floor, loop':<42}{_us(floor_us):>12}"
                f"{'':>13}{'':>16}  roxxel's loop {loop:.2f}x it "
                f"(budget <= {LOOP_BUDGET}x: {budget})"
            )
        lines.append("")
    lines.append("notes:")
    for api in APIS:
        for impl in IMPLS:
            case = results[impl][api]
            lat = case["latency"]
            gc_max = max(lat["gc_max_ns"])
            gc_max_cpu = max(lat["gc_max_cpu_ns"])
            slowest = ", ".join(f"#{i} {t / 1e3:,.0f}" for i, t in lat["slowest"])
            close_ms = (case["throughput"]["total_ns"] - case["throughput"]["loop_ns"]) / 1e6
            lines.append(
                f"  {impl} {api}: close() after the loop took {close_ms:,.0f} ms; "
                f"timer overhead {lat['overhead_p50_ns']} ns (subtracted); "
                f"gc in latency pass gen0/1/2 = {'/'.join(map(str, lat['gc_count']))}, "
                f"longest {gc_max / 1e3:,.0f} µs wall, {gc_max_cpu / 1e3:,.0f} µs CPU, "
                f"total {lat['gc_total_ns'] / 1e6:,.1f} ms wall; "
                f"slowest calls (index µs): {slowest}"
            )
            for mode in MODES:
                got, want = case[mode]["on_disk"], case[mode]["n"]
                if got != want:
                    lines.append(f"  !! {impl} {api} {mode}: {got:,} of {want:,} records on disk")
    return "\n".join(lines)


def records_missing(results: dict[str, Any]) -> bool:
    """True if a case lost records: not on disk, or (collector dead) neither undelivered nor
    counted as dropped."""
    alive = any(
        results[impl][api][mode]["on_disk"] != results[impl][api][mode]["n"]
        for impl in IMPLS
        for api in APIS
        for mode in MODES
    )
    return alive or any(
        _dead_problems(dead[api][mode])
        for dead in results.get("collector_dead", ())
        for api in APIS
        for mode in MODES
    )


# -- the collector-dead tables ---------------------------------------------------


def _dead_values_us(case: dict[str, Any]) -> dict[str, float]:
    """The DEAD_ROWS of one roxxel case (alive or dead), in µs."""
    tp, lat = case["throughput"], case["latency"]
    n_tp = tp["n"]
    timer = lat["overhead_p50_ns"]
    return {
        "mean loop only": tp["loop_ns"] / n_tp / 1e3,
        "cpu loop only": tp["cpu_loop_ns"] / n_tp / 1e3,
        "cpu incl. close": tp["cpu_self_ns"] / n_tp / 1e3,
        "p50": max(0, lat["p50_ns"] - timer) / 1e3,
        "p99": max(0, lat["p99_ns"] - timer) / 1e3,
        "p99.9": max(0, lat["p999_ns"] - timer) / 1e3,
        "max": max(0, lat["max_ns"] - timer) / 1e3,
        "close()": (tp["total_ns"] - tp["loop_ns"]) / 1e3,
    }


def _dead_problems(result: dict[str, Any]) -> list[str]:
    """Why the records of one collector-dead pass do not add up (empty if they do)."""
    problems = []
    n, dropped, und = result["n"], result["dropped"], result["undelivered"]
    kept = und["metrics"] + und["lines"]
    if kept + dropped != n + 1:  # the warm-up record too
        problems.append(
            f"{kept:,} undelivered + {dropped:,} dropped records != {n + 1:,} logged "
            "(incl. the warm-up)"
        )
    if result.get("notices") != [kept]:  # the drop report is not a record
        problems.append(
            f"close()'s stderr notice(s) {result.get('notices')} != {kept:,} records in the file"
        )
    if result["left_in_log_dir"]:
        problems.append(f"left in the log dir: {result['left_in_log_dir']}")
    return problems


def _gc_text(lat: dict[str, Any]) -> str:
    """The garbage collections of one latency pass, for the notes."""
    return (
        f"gc gen0/1/2 = {'/'.join(map(str, lat['gc_count']))}, "
        f"longest {max(lat['gc_max_ns']) / 1e3:,.0f} µs wall, "
        f"{max(lat['gc_max_cpu_ns']) / 1e3:,.0f} µs CPU, "
        f"total {lat['gc_total_ns'] / 1e6:,.1f} ms wall"
    )


def format_dead_tables(results: dict[str, Any]) -> str:
    """Per max_buffer_bytes: alive vs. collector-dead numbers of roxxel, then notes."""
    lines: list[str] = []
    for dead in results.get("collector_dead", ()):
        lines += [
            f"{DEAD_SECTION}, max_buffer_bytes {format_size(dead['max_buffer_bytes'])}; "
            "aggregator: a port where nothing listens, close_timeout=0",
            "",
            f"{'case':<42}{'alive':>12}{'dead':>13}{'ratio dead/alive':>18}",
        ]
        for api in APIS:
            alive = _dead_values_us(results["roxxel"][api])
            gone = _dead_values_us(dead[api])
            for row in DEAD_ROWS:
                fmt = _ms if row == "close()" else _us
                ratio = _ratio(alive[row], gone[row])
                lines.append(
                    f"{api + ' ' + row:<42}{fmt(alive[row]):>12}{fmt(gone[row]):>13}{ratio:>18}"
                )
            lines.append("")
        lines.append("notes:")
        for api in APIS:
            alive_lat = results["roxxel"][api]["latency"]
            for mode in MODES:
                r = dead[api][mode]
                und = r["undelivered"]
                text = (
                    f"  {api}, {mode} pass: dropped {r['dropped_in_loop']:,} records by the end "
                    f"of the loop, {r['dropped']:,} by close(); the undelivered file held "
                    f"{und['metrics'] + und['lines']:,} records "
                    f"({und['file_bytes'] / 1e6:,.1f} MB, deleted) and {und['reports']:,} "
                    "drop report(s) for "
                    f"{und['reported_metrics'] + und['reported_lines']:,} records; "
                    f"max RSS {r['max_rss_kib'] / 1024:,.0f} MiB "
                    f"(alive {results['roxxel'][api][mode]['max_rss_kib'] / 1024:,.0f} MiB)"
                )
                if mode == "latency":
                    slowest = ", ".join(f"#{i} {t / 1e3:,.0f}" for i, t in r["slowest"])
                    text += (
                        f"; close() {r['close_ns'] / 1e6:,.0f} ms; {_gc_text(r)} "
                        f"(alive: {_gc_text(alive_lat)}); slowest calls (index µs): {slowest}"
                    )
                lines.append(text)
                lines += [f"  !! {api} {mode}: {p}" for p in _dead_problems(r)]
        lines.append("")
    return "\n".join(lines).rstrip("\n")
