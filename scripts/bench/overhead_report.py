#!/usr/bin/env python3
"""Turns the JSON lines of scripts/bench/overhead.sh into the overhead table (each row with its
target and a verdict) and, when matplotlib is installed, a PNG of latency percentiles and of
streamed TTFT against workers. Every number is relative to direct-to-upstream in the same run."""

import argparse
import json
import math
import sys


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by = {}
    for row in rows:
        by.setdefault(row["experiment"], []).append(row)
    return by


def pick(rows, target, **match):
    for row in rows or []:
        if row["target"] == target and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def num(value):
    return value if isinstance(value, (int, float)) and not math.isnan(value) else None


def table(by):
    """(what, measured, target, verdict) rows."""
    out = []

    def row(what, measured, target, ok):
        verdict = "n/a" if ok is None else ("met" if ok else "NOT met")
        out.append((what, measured, target, verdict))

    plain = by.get("interleaved", [])
    pair, warn, skel, direct = (pick(plain, t) for t in ("pair", "pair_warn", "skeleton", "direct"))
    if pair and direct:
        row("added latency, 1 client, non-stream, `info`",
            f"p50 +{pair['added_p50_us']:.0f} µs, p99 +{pair['added_p99_us']:.0f} µs",
            "p99 ≤ 250 µs", pair["added_p99_us"] <= 250)
    if warn:
        row("same at `warn`", f"p50 +{warn['added_p50_us']:.0f} µs, p99 +{warn['added_p99_us']:.0f} µs",
            "—", None)
    one = pick(plain, "pair_1t")
    if one:
        cpu = f", CPU {one['cpu_us_per_request']:.0f} µs" if num(one.get("cpu_us_per_request")) else ""
        row("same, one worker thread each (`*_WORKER_THREADS=1`)",
            f"p50 +{one['added_p50_us']:.0f} µs, p99 +{one['added_p99_us']:.0f} µs{cpu}", "p99 ≤ 250 µs",
            one["added_p99_us"] <= 250)
    if skel:
        row("the skeleton (zero-logic two hops)",
            f"p50 +{skel['added_p50_us']:.0f} µs, p99 +{skel['added_p99_us']:.0f} µs", "(the floor)", None)
    if pair and skel:
        ratio = pair["p50_ms"] / skel["p50_ms"]
        row("the pair ÷ its skeleton, p50", f"{ratio:.2f}×", "≤ 1.15×", ratio <= 1.15)
    if pair and warn and num(pair.get("cpu_us_per_request")) and num(warn.get("cpu_us_per_request")):
        cpu, cpu_warn = pair["cpu_us_per_request"], warn["cpu_us_per_request"]
        row("CPU per request, gateway + scheduler, 1 client",
            f"{cpu:.0f} µs (`info`), {cpu_warn:.0f} µs (`warn`)", "≤ 150 µs", cpu <= 150)
        cost = cpu / cpu_warn - 1
        row("`info` over `warn`, CPU per request", f"{cost * 100:+.0f} %", "≤ +10 %", cost <= 0.10)
    if skel and num(skel.get("cpu_us_per_request")):
        row("CPU per request, the skeleton, 1 client", f"{skel['cpu_us_per_request']:.0f} µs", "(the floor)", None)
    loaded = by.get("load", [])
    lpair, lskel = pick(loaded, "pair"), pick(loaded, "skeleton")
    if lpair and num(lpair.get("cpu_us_per_request")):
        extra = f"; skeleton {lskel['cpu_us_per_request']:.0f} µs at {lskel['rps_ratio']:.2f}×" if lskel and num(lskel.get("cpu_us_per_request")) else ""
        row(f"CPU per request under load ({lpair['workers']} workers)",
            f"{lpair['cpu_us_per_request']:.0f} µs at {lpair['rps_ratio']:.2f}× direct's rps{extra}",
            "≤ 100 µs", lpair["cpu_us_per_request"] <= 100)
    lone = pick(loaded, "pair_1t")
    if lone and num(lone.get("cpu_us_per_request")):
        row(f"same, one worker thread each",
            f"{lone['cpu_us_per_request']:.0f} µs at {lone['rps_ratio']:.2f}× direct's rps", "≤ 100 µs",
            lone["cpu_us_per_request"] <= 100)
    streamed = [r for r in by.get("interleaved_stream", []) if r["tag"] == "instant"]
    spair = pick(streamed, "pair")
    if spair:
        sskel = pick(streamed, "skeleton")
        extra = f" (skeleton p99 +{sskel['added_p99_us']:.0f} µs)" if sskel else ""
        row("streamed: added time to first token",
            f"p50 +{spair['added_p50_us']:.0f} µs, p99 +{spair['added_p99_us']:.0f} µs{extra}",
            "p99 ≤ 300 µs", spair["added_p99_us"] <= 300)
    paced = [r for r in by.get("interleaved_stream", []) if r["tag"] == "paced"]
    gpair, gdirect = pick(paced, "pair"), pick(paced, "direct")
    if gpair and gdirect:
        same = gpair["chunks"] == gdirect["chunks"] and abs(gpair["mean_gap_ms"] / gdirect["mean_gap_ms"] - 1) <= 0.05
        row("streamed: chunk gaps",
            f"{gpair['mean_gap_ms']:.1f} ms vs direct {gdirect['mean_gap_ms']:.1f} ms, "
            f"{gpair['chunks']} of {gdirect['chunks']} chunks", "identical to direct (±5 %)", same)
    held = [r for r in by.get("hold", []) if r["tag"] == "paced"]
    for label, what in (("pair", "memory per held stream"), ("pair_1t", "same, one worker thread each")):
        hpair, hskel = pick(held, label), pick(held, "skeleton")
        if hpair:
            gw, sched = hpair["kib_per_stream"]
            extra = f"; skeleton {hskel['kib_per_stream'][0]:.0f} + {hskel['kib_per_stream'][1]:.0f} KiB" if hskel and label == "pair" else ""
            row(f"{what} ({hpair['streams_open']} streams)",
                f"gateway {gw:.0f} KiB + scheduler {sched:.0f} KiB{extra}", "≤ 48 KiB each",
                gw <= 48 and sched <= 48 and hpair["streams_failed"] == 0)
    burst = pick([r for r in by.get("hold", []) if r["tag"] == "burst"], "pair")
    if burst:
        gw, sched = burst["kib_per_stream"]
        row(f"high-water mark per stream, all {burst['streams_open']} opened at once",
            f"gateway {gw:.0f} KiB + scheduler {sched:.0f} KiB", "— (a burst's transient peak)", None)
    flood = [r for r in by.get("load_stream", []) if r["tag"] == "paced"]
    for label, what in (("pair", "concurrent streams, completed"), ("pair_1t", "same, one worker thread each")):
        fpair = pick(flood, label)
        if fpair:
            fskel = pick(flood, "skeleton")
            extra = f" (skeleton {fskel['rps_ratio']:.2f}×)" if fskel and label == "pair" else ""
            row(f"{fpair['workers']} {what}",
                f"{fpair['rps_ratio']:.2f}× of direct{extra}, {fpair['errors']} errors", "≥ 0.95×",
                fpair["rps_ratio"] >= 0.95 and fpair["errors"] == 0)
    return out


def markdown(rows):
    lines = ["| what | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def sweep_points(by, tag="seed"):
    points = {}
    for r in by.get("load_stream", []):
        if r["tag"] == tag and r["target"] in ("direct", "pair") and num(r.get("ttft_p50_ms")):
            points.setdefault(r["target"], []).append((r["workers"], r["ttft_p50_ms"], r["ttft_p99_ms"]))
    return points


def plot(by, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("overhead: matplotlib not installed, no plot", file=sys.stderr)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")]
    plain = by.get("interleaved", [])
    for target, color in (("direct", "#4c72b0"), ("skeleton", "#8c8c8c"), ("pair", "#dd8452"),
                          ("pair_warn", "#c44e52"), ("pair_1t", "#55a868")):
        r = pick(plain, target)
        if r:
            left.plot([n for n, _ in names], [r[k] * 1000 for _, k in names], marker="o", label=target, color=color)
    left.set_title("non-stream latency, 1 client, instant upstream")
    left.set_ylabel("µs")
    left.legend()
    left.grid(alpha=0.3)
    for target, color in (("direct", "#4c72b0"), ("pair", "#dd8452")):
        pts = sorted(sweep_points(by).get(target, []))
        if pts:
            right.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{target} p50")
            right.plot([p[0] for p in pts], [p[2] for p in pts], marker="x", linestyle="--", color=color, label=f"{target} p99")
    right.set_title("streamed TTFT vs workers, seed scenario (4 slots)")
    right.set_xlabel("workers")
    right.set_ylabel("ms")
    right.set_xscale("log", base=2)
    right.legend()
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"overhead: plot written to {path}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results")
    parser.add_argument("--markdown")
    parser.add_argument("--plot")
    args = parser.parse_args()
    by = load(args.results)
    rows = table(by)
    text = markdown(rows)
    if sweep_points(by):
        sweep = sweep_points(by)
        text += "\nSeed scenario (4 slots, 50 ms TTFT, 20 ms/token), streamed TTFT p50 / p99 ms:\n\n"
        text += "| workers | direct | pair |\n|---:|---:|---:|\n"
        direct = dict((w, (a, b)) for w, a, b in sweep.get("direct", []))
        for w, a, b in sorted(sweep.get("pair", [])):
            d = direct.get(w, (float("nan"), float("nan")))
            text += f"| {w} | {d[0]:.1f} / {d[1]:.1f} | {a:.1f} / {b:.1f} |\n"
    engine = [r for r in by.get("load_stream", []) if r["tag"] == "engine"]
    if engine:
        text += "\nReal engine (llama.cpp + SmolLM2-135M, 1 slot), streamed:\n\n"
        text += "| workers | target | requests | rps | rps ratio | TTFT p50 / p99 ms |\n|---:|---|---:|---:|---:|---:|\n"
        for r in engine:
            ratio, p50, p99 = (num(r.get(k)) for k in ("rps_ratio", "ttft_p50_ms", "ttft_p99_ms"))
            text += (f"| {r['workers']} | {r['target']} | {r['requests']} | {r['rps']:.2f} | "
                     f"{'—' if ratio is None else f'{ratio:.3f}'} | "
                     f"{'—' if p50 is None else f'{p50:.1f} / {p99:.1f}'} |\n")
    print(text)
    if args.markdown:
        open(args.markdown, "w").write(text)
    if args.plot:
        plot(by, args.plot)
    if not rows:
        print("overhead: no results to report", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
