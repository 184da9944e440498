"""Every benchmark, one command, one machine, one run: data, training vs the notebook peer,
t-SNE, EDA, studies, segmentation, and the GPU fast path (cifar10-fast.yaml) where there is a GPU.

usage: python benchmarks/run_all.py [--runs 3] [--skip NAME ...]
Each script writes its JSON under benchmarks/results/; this one collects their Markdown tables
into BENCHMARKS.md between the "latest run" markers (the rest of the file, the written
analysis, is left as it is) and into benchmarks/results/all.json. Takes about 25 minutes on
the 2-core CPU with --runs 3; needs ../shared/data.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, measured, save_results  # noqa: E402

START, END = "<!-- latest run: start -->", "<!-- latest run: end -->"


def suite(runs: int) -> dict[str, list[str]]:
    here = ROOT / "benchmarks"
    scripts = {
        "data": [str(here / "bench_data.py"), "--runs", str(runs)],
        "train": [str(here / "bench_train.py"), "--runs", str(runs)],
        "tsne": [str(here / "bench_tsne.py"), "--runs", str(runs)],
        "eda": [str(here / "bench_eda.py"), "--runs", str(runs)],
        "study": [str(here / "bench_study.py"), "--runs", str(max(1, runs - 1)), "--real"],
    }
    if (here / "bench_segment.py").exists():
        scripts["segment"] = [str(here / "bench_segment.py")]
    scripts["fast"] = [str(here / "bench_fast.py")]  # the GPU fast path; a one-line skip without a GPU
    return scripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], help="benchmark names to leave out")
    args = parser.parse_args()
    tables, results = [], {"machine": machine(), "date": datetime.date.today().isoformat(), "benchmarks": {}}
    for name, argv in suite(args.runs).items():
        if name in args.skip:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        m = measured([sys.executable, *argv], cwd=ROOT)
        results["benchmarks"][name] = {"wall_seconds": round(m.wall_seconds, 1), "stdout": m.stdout}
        lines = [line for line in m.stdout.splitlines() if not line.startswith("machine:")]
        tables.append(f"### {name} (`{Path(argv[0]).name}`, {m.wall_seconds / 60:.1f} min)\n\n" + "\n".join(lines).strip())
    save_results("all", results)
    block = (f"{START}\n## Latest full run (`python benchmarks/run_all.py --runs {args.runs}`)\n\n"
             f"{results['date']}, {results['machine']}. Medians where a benchmark ran several times.\n\n"
             + "\n\n".join(tables) + f"\n{END}")
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
