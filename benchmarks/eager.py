"""Eager PyTorch latency: our V2, V3-Large and V3-Small against torchvision's same architectures.

Batch 1 and 32 at 224x224, fp32, inference mode, in one run, interleaved (see common.py).
Target (issue 2): ours <= 1.0x torchvision's time. Writes benchmarks/results/eager.md.

    python benchmarks/eager.py [--rounds 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torchvision

from mobilenets import create_model

from common import interleaved, machine, paired_ratio, ratio_spread, write_results

PAIRS = {
    "mobilenet_v2_100": torchvision.models.mobilenet_v2,
    "mobilenet_v3_large_100": torchvision.models.mobilenet_v3_large,
    "mobilenet_v3_small_100": torchvision.models.mobilenet_v3_small,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for batch in map(int, args.batches.split(",")):
        for name, reference in PAIRS.items():
            ours, theirs = create_model(name).eval(), reference().eval()
            x = torch.randn(batch, 3, 224, 224)
            iters = 10 if batch == 1 else 1

            def run(model, x=x):
                with torch.inference_mode():
                    model(x)

            times = interleaved(
                {"ours": lambda m=ours: run(m), "torchvision": lambda m=theirs: run(m)}, args.rounds, iters
            )
            ms_ours, ms_tv = (statistics.median(times[k]) * 1e3 for k in ("ours", "torchvision"))
            ratio = paired_ratio(times["ours"], times["torchvision"])
            verdict = "meets" if ratio <= 1.0 else "misses"
            spread = ratio_spread(times["ours"], times["torchvision"])
            rows.append(
                f"| {name} | {batch} | {ms_ours:.2f} | {ms_tv:.2f} | {ratio:.3f} | {spread} | {verdict} |"
            )
            print(rows[-1], flush=True)

    body = "\n".join(
        [
            "Median per-call latency (ms), fp32, inference mode, 224x224. Ratio = median over interleaved rounds",
            "of ours / torchvision (each pair ran back to back). Target: ratio <= 1.0.",
            "",
            "Our models store conv weights channels-last by default (memory_format option); torchvision's run",
            "as shipped (NCHW). The quartiles show the spread of the per-round ratios.",
            "",
            "| model | batch | ours (ms) | torchvision (ms) | ratio | ratio q1-q3 | target |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(write_results("eager", "Eager PyTorch latency: mobilenets vs torchvision", body, machine()))


if __name__ == "__main__":
    main()
