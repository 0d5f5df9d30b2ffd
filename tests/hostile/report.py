"""Print issue 12's hostile-input table: family x outcome, then every distinct escape.

    .venv/bin/python -m tests.hostile.report [FAMILY ...] [--seed N] [--cases]

Runs the same cases as `test_hostile_inputs.py` (same seed, same worker process) and prints
how each family fared: handled cleanly (refused with a documented error, or a correct result)
or what escaped; then one line per distinct escape (what, where, how many cases, one example).
`--cases` also lists every failing case. The exit code is 1 when anything escaped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from tests.hostile import artifacts as artifacts_mod
from tests.hostile.cases import FAMILIES, fuzz_seed
from tests.hostile.harness import CLEAN, ESCAPES, Outcome
from tests.hostile.worker import Worker, run_family


def table(results: dict[str, list[Outcome]]) -> str:
    labels = [
        *CLEAN,
        *(e for e in ESCAPES if any(o.label == e for rs in results.values() for o in rs)),
    ]
    head = ["family", "cases", "clean", *labels]
    rows = []
    for family, outcomes in results.items():
        counts = Counter(o.label for o in outcomes)
        clean = sum(o.ok for o in outcomes)
        rows.append(
            [
                family,
                str(len(outcomes)),
                f"{100 * clean / max(1, len(outcomes)):.1f}%",
                *(str(counts.get(lb, "")) for lb in labels),
            ]
        )
    everything = [o for rs in results.values() for o in rs]
    total = Counter(o.label for o in everything)
    rows.append(
        [
            "total",
            str(len(everything)),
            f"{100 * sum(o.ok for o in everything) / max(1, len(everything)):.1f}%",
            *(str(total.get(lb, "")) for lb in labels),
        ]
    )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join(
        [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)]
    )


def escapes(results: dict[str, list[Outcome]]) -> str:
    seen: dict[str, list[Outcome]] = defaultdict(list)
    for outcomes in results.values():
        for o in outcomes:
            for p in o.problems:
                seen[f"[{p.label}] {p.signature}"].append(o)
    lines = []
    for sig, cases in sorted(seen.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        families = sorted({c.case.family for c in cases})
        example = cases[0]
        lines.append(
            f"{len(cases):4d} x {sig}\n       families: {', '.join(families)}; "
            f"e.g. {example.case.id}: {example.case.summary}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "families",
        nargs="*",
        metavar="FAMILY",
        help=f"families to run (default: all): {', '.join(FAMILIES)}",
    )
    parser.add_argument("--seed", type=int, default=fuzz_seed())
    parser.add_argument("--cases", action="store_true", help="list every failing case")
    args = parser.parse_args(argv)
    families = args.families or list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    with tempfile.TemporaryDirectory(prefix="rnnedge-hostile-") as tmp:
        start = time.perf_counter()
        art = artifacts_mod.build(Path(tmp) / "artifacts")
        cases_dir = Path(tmp) / "cases"
        cases_dir.mkdir()
        worker = Worker(art, cases_dir, args.seed)
        results: dict[str, list[Outcome]] = {}
        try:
            for family in families:
                t0 = time.perf_counter()
                results[family] = run_family(family, art, worker, progress=_dot)
                print(
                    f"\n{family}: {len(results[family])} cases in {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                )
        finally:
            worker.close()
    print(
        f"seed {args.seed}, {sum(map(len, results.values()))} cases in "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    print(table(results))
    print("\ndistinct escapes (cases x what, where):")
    print(escapes(results) or "  none")
    slowest = sorted((o for rs in results.values() for o in rs), key=lambda o: -o.seconds)[:5]
    print("\nslowest cases: " + "; ".join(f"{o.case.id} {o.seconds:.1f} s" for o in slowest))
    if args.cases:
        print("\nfailing cases:")
        for outcomes in results.values():
            for o in outcomes:
                if not o.ok:
                    print("  " + o.describe())
    return 0 if all(o.ok for rs in results.values() for o in rs) else 1


def _dot(outcome: Outcome) -> None:
    print("." if outcome.ok else "x", end="", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
