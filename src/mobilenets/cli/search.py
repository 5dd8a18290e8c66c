"""The search commands: `latency` (the published grid measured on this device and backend)."""

from __future__ import annotations

import argparse

from .arguments import positive_int

RESULT_BANNER = "<!-- Written by mobilenets latency"
RESULT_FILES = ("latency.md", "latency.png", "latency.json")


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be a comma list of sizes such as 96,128,224, got {text!r}")
    return values


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, got {text!r}")
    return value


def cmd_latency(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from ..search import measure_grid, published_grid, within_budget
    from ..search.front import latency_figure, latency_table
    from ..search.latency import cache_key, check_backend, measurements_json

    check_backend(args.backend, args.threads, args.batch)  # before anything is built
    points = published_grid(args.families, args.models, args.resolutions)
    out = Path(args.out)
    report = out / "latency.md"
    ours = report.is_file() and report.read_text(errors="replace").startswith(RESULT_BANNER)
    taken = [name for name in RESULT_FILES if (out / name).exists()]
    if taken and not ours:  # a user's latency.png beside no report of ours is theirs too
        raise FileExistsError(
            f"{out / taken[0]} exists and was not written by mobilenets latency: choose another --out"
        )
    measurements = measure_grid(
        points,
        args.backend,
        threads=args.threads,
        batch=args.batch,
        rounds=args.rounds,
        cache_dir=args.cache,
        fresh=args.fresh,
        progress=not args.quiet,
    )
    setting = f"{args.backend}, {args.threads} thread{'s' if args.threads > 1 else ''}, batch {args.batch}"
    table = latency_table(measurements)
    machine = "\n".join(f"- {k}: {v}" for k, v in cache_key(args.backend, args.threads, args.batch).items())
    out.mkdir(parents=True, exist_ok=True)
    report.write_text(
        f"{RESULT_BANNER} -->\n# Published top-1 against latency measured here ({setting})\n\n{machine}\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        f"Each latency: the median of {args.rounds} interleaved rounds' medians (`mobilenets latency`); "
        "top-1 as the papers publish it.\n\n![top-1 against latency](latency.png)\n\n"
        f"{table}\n"
    )
    (out / "latency.json").write_text(
        json.dumps({"setting": setting, "points": measurements_json(measurements)}, indent=1)
    )
    latency_figure(measurements, out / "latency.png", f"Published top-1 against latency here ({setting})")
    print(table)
    print(f"wrote {report}, {out / 'latency.png'} and {out / 'latency.json'}")
    if args.budget_ms is None:
        return 0
    best = within_budget(measurements, args.budget_ms)
    if best is None:
        fastest = min(measurements, key=lambda m: m.median_ms)
        print(
            f"no variant fits {args.budget_ms:g} ms on {setting}: the fastest, {fastest.model} at "
            f"{fastest.resolution}, takes {fastest.median_ms:.2f} ms"
        )
        return 1
    print(
        f"within {args.budget_ms:g} ms: {best.model} at {best.resolution}x{best.resolution}, "
        f"{best.top1:.1f}% top-1 ({best.source}), {best.median_ms:.2f} ms"
    )
    return 0


def add_latency(commands) -> None:
    # No import of mobilenets.search here: it needs torch, and the parser is built in NumPy-only installs
    # too; search.latency.check_backend refuses an unknown backend, naming the choices.
    latency = commands.add_parser(
        "latency",
        help="measure the published variants on this device and backend; the accuracy-latency front",
        description="Measure every registered variant at the input sizes its papers report a top-1 for "
        "(96-224) on the chosen backend here, interleaved and cached; write latency.md, latency.png (the "
        "V2 paper's performance figure, with latency measured here) and latency.json.",
    )
    latency.add_argument(
        "--backend", default="onnxruntime", help="onnxruntime (default), openvino, torch, numpy or c"
    )
    latency.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="intra-op threads (numpy: its BLAS takes OMP_NUM_THREADS / OPENBLAS_NUM_THREADS instead)",
    )
    latency.add_argument("--batch", type=positive_int, default=1)
    latency.add_argument("--budget-ms", type=_budget, help="name the most accurate variant that fits")
    latency.add_argument("--families", nargs="+", metavar="FAMILY", help="only these (mobilenet_v2 ...)")
    latency.add_argument("--models", nargs="+", metavar="MODEL", help="only these registered models")
    latency.add_argument("--resolutions", type=_ints, help="only these input sizes (96,128,160,192,224)")
    latency.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds (default 5)")
    latency.add_argument(
        "--out", default="latency", help="folder for the table and figure (default latency/)"
    )
    latency.add_argument(
        "--cache", metavar="DIR", help="the cache folder (default ~/.cache/mobilenets/latency)"
    )
    latency.add_argument("--fresh", action="store_true", help="measure again, ignoring the cache")
    latency.add_argument("--quiet", action="store_true", help="no progress bars")
    latency.set_defaults(func=cmd_latency)
