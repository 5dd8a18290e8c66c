"""Training throughput: our V2 and V3-Small with the training step as shipped, against torchvision's
same architectures in a plain fp32 NCHW loop. Batch 32 at 224x224, AdamW for both, interleaved rounds.

Target (issue 4): at least 1.3x torchvision's images/s. Writes benchmarks/results/train.md.

    python benchmarks/train.py [--rounds 7] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torchvision
from torch import nn

from mobilenets import create_model
from mobilenets.training import TrainConfig, TrainStep, autocast_dtype, make_optimizer

from common import interleaved, machine, paired_ratio, ratio_spread, write_results

PAIRS = {
    "mobilenet_v2_100": torchvision.models.mobilenet_v2,
    "mobilenet_v3_small_100": torchvision.models.mobilenet_v3_small,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cpu")
    rows = []
    for name, reference in PAIRS.items():
        x = torch.randn(args.batch, 3, 224, 224)
        y = torch.randint(0, 1000, (args.batch,))
        config = TrainConfig(data="-", out="-", model=name)  # the shipped defaults (channels_last, amp auto)
        ours = create_model(name).train()
        step = TrainStep(
            ours,
            make_optimizer(config, ours),
            nn.CrossEntropyLoss(),
            autocast_dtype(config.amp, device),
            channels_last=config.channels_last,
            device=device,
        )
        theirs = reference().train()
        optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-3)

        def plain_step(model=theirs, optimizer=optimizer, x=x, y=y):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        times = interleaved(
            {"ours": lambda step=step, x=x, y=y: step(x, y), "torchvision": plain_step},
            args.rounds,
            1,
            warmup=2,
        )
        ours_ips = args.batch / statistics.median(times["ours"])
        tv_ips = args.batch / statistics.median(times["torchvision"])
        speedup = 1 / paired_ratio(times["ours"], times["torchvision"])
        low, high = ratio_spread(times["torchvision"], times["ours"]).split("-")
        verdict = "meets" if speedup >= 1.3 else "misses"
        rows.append(
            f"| {name} | {args.batch} | {ours_ips:.1f} | {tv_ips:.1f} | {speedup:.2f}x | {low}-{high} | {verdict} |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "Training images/s (forward + backward + AdamW step), fp32 on this CPU, 224x224. Speed-up = median over",
            "interleaved rounds of torchvision's step time / ours. Ours: `mobilenets.train.TrainStep` with the shipped",
            "defaults (channels-last weights and inputs; autocast off on CPU). torchvision: plain NCHW loop.",
            "Target: speed-up >= 1.3x.",
            "",
            "| model | batch | ours (img/s) | torchvision (img/s) | speed-up | quartiles | target |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(write_results("train", "Training throughput: mobilenets vs torchvision", body, machine()))


if __name__ == "__main__":
    main()
