"""Render a run's results as Markdown: the load table, memory and start-up, in-process, targets.

Why Markdown: the table goes into the issue and the README as it is; results.json keeps every
number for anyone who wants to slice differently.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def format_cell(point: dict[str, Any]) -> str:
    if "error" in point:
        return "error"
    errors = point["status_errors"] + point["socket_errors"]
    if point["requests"] == 0:
        return "no request completed" + (f" · **{errors} errors**" if errors else "")
    cell = (
        f"{point['requests_per_s']:,.0f} req/s · {point['p50_ms']:.1f} / {point['p99_ms']:.1f} ms"
    )
    if point["rows"] > 1:
        cell += f" · {point['rows_per_s']:,.0f} rows/s"
    if errors:
        cell += f" · **{errors} errors**"
    return cell


def load_table(points: list[dict[str, Any]], concurrencies: list[int]) -> list[str]:
    """One line per system, model, protocol and rows; one column per concurrency (medians)."""
    grouped: dict[tuple[str, str, str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for point in points:
        grouped[(point["system"], point["model"], point["protocol"], point["rows"])][
            point["concurrency"]
        ] = point
    header = (
        "| system | model | protocol | rows/request | "
        + " | ".join(f"c={c}: req/s · p50 / p99" for c in concurrencies)
        + " | server CPU ms/req (c=32) |"
    )
    lines = [header, "|" + " --- |" * (5 + len(concurrencies))]
    for (system, model, protocol, rows), by_concurrency in grouped.items():
        cells = [
            format_cell(by_concurrency[c]) if c in by_concurrency else "" for c in concurrencies
        ]
        at_32 = by_concurrency.get(32, {})
        cpu = at_32.get("server_cpu_ms_per_request")
        lines.append(
            f"| {system} | {model} | {protocol} | {rows} | "
            + " | ".join(cells)
            + f" | {'' if cpu is None else f'{cpu:.2f}'} |"
        )
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Benchmark results",
        "",
        f"- started {meta['started']}, finished {meta['finished']}; {meta['machine']}",
        f"- {meta['duration_s']} s per point, warm-up {meta['warmup_s']} s per scenario, "
        f"{meta['repeats']} rounds for target points (medians), wrk 1 thread",
        f"- load average before / after: {meta['loadavg_before']} / {meta['loadavg_after']}"
        + (" — **busy machine: smoke-test numbers only**" if meta.get("busy") else ""),
        f"- models: service repository `{meta['model_repository']}`, baselines and peers "
        f"`{meta['mnist_dir']}`",
        f"- load generator CPU (wrk) over all points: {meta['loadgen_cpu_s']:.1f} s of "
        f"{meta['load_wall_s']:.0f} s of load",
        "",
        "## Load (medians over rounds where repeated; p50 / p99 latency in ms)",
        "",
        *load_table(results["points"], meta["concurrency"]),
        "",
        "## Systems: start to ready and memory",
        "",
        "| system | status | start to ready, s | memory after start, MiB (RSS / PSS) | "
        "peak under load, MiB (RSS / PSS) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, system in results["systems"].items():
        idle, peak = system.get("memory_idle"), system.get("memory_peak")
        lines.append(
            f"| {name} | {system['status']} | {system.get('start_to_ready_s_median', '')} | "
            + (f"{idle['rss_mib']} / {idle['pss_mib']}" if idle else "")
            + " | "
            + (f"{peak['rss_mib']} / {peak['pss_mib']}" if peak else "")
            + " |"
        )
    lines += [
        "",
        f"`import tensorflow` (fresh interpreter, median): {results.get('import_tensorflow_s')} s",
        "",
        "## In-process limit (SavedModel signature called directly)",
        "",
        "| model | batch | median call, ms | rows/s |",
        "| --- | --- | --- | --- |",
    ]
    for row in results.get("inprocess", []):
        lines.append(
            f"| {row['model']} | {row['batch_size']} | {row['median_ms']} | "
            f"{row['rows_per_s']:,.0f} |"
        )
    lines += [
        "",
        "## Targets (mnist, one row per request unless said)",
        "",
        "| figure | target | measured (medians) | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for target in results["targets"]:
        lines.append(
            f"| {target['figure']} | {target['target']} | {target['measured']} | "
            f"{target['verdict']} |"
        )
    if results.get("notes"):
        lines += ["", "## Notes", "", *[f"- {note}" for note in results["notes"]]]
    return "\n".join(lines) + "\n"
