"""Each CPU hot path against the machine, measured in one run: seconds, GFLOP/s, page faults and the
kernel's share of CPU time under glibc's default allocator and under the one arelbo sets up
(arelbo.core.allocator), next to the same FLOPs as one large matmul (the machine's practical peak).

    python benchmarks/hot_paths.py [--repeats 2] [--threads 1] [--inception-batch 64]
           [--settings system kept] [--channels-last]

The hot paths: a training step of a Table 3 MNIST net (Iso-I AR-ELBO, batch 64: forward, backward,
Adam) and of Section 3's Appendix D net (stochastic encoding, σx² = 1, make quick's batch 32); one
Inception batch at the FID job's batch size; encoding and decoding a batch of the FID stage's size.
Each setting runs in its own fresh process (the allocator is chosen before torch is imported), the
settings alternate `--repeats` times, and each number is the fastest of its process's timed rounds
after `--warmup` untimed ones. FLOPs are counted by torch.utils.flop_counter on the path itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {"system": {"ARELBO_MALLOC": "system"}, "kept": {}}
PATHS = ("train_table3", "train_section3", "inception", "encode_decode")


def _paths(args):
    """name -> (work(), units of work per call, unit name), built once per process."""
    import torch

    from arelbo.core import layout
    from arelbo.core.config import load_config
    from arelbo.metrics.fid import inception_features
    from arelbo.metrics.inception_weights import build_inception
    from arelbo.models.nets import build_net
    from arelbo.models.objectives import loss_and_terms
    from arelbo.stages import evaluate
    from arelbo.stages.section3 import GridPoint, Section3Model, stochastic_loss

    torch.manual_seed(0)
    layout_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x64 = torch.rand(64, 1, 28, 28).contiguous(memory_format=layout_format)
    net = build_net("iso_i_arelbo", "mnist").to(memory_format=layout_format)
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def train_table3():
        loss, _ = loss_and_terms("iso_i_arelbo", "mnist", net, x64)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    point = GridPoint(table=1, encoding="stochastic", log10_sigma_x2=0.0)
    s3 = Section3Model(point).to(memory_format=layout_format)
    s3_opt = torch.optim.Adam(s3.parameters(), 1e-3)
    x32 = torch.rand(32, 1, 28, 28).contiguous(memory_format=layout_format)

    def train_section3():
        loss, _ = stochastic_loss(x32, s3, 1.0)
        s3_opt.zero_grad(set_to_none=True)
        loss.backward()
        s3_opt.step()

    cfg = load_config(REPO / "config" / "ci.yaml", check_folders=False)
    inception = build_inception(layout.inception_weights(cfg.resources))
    images = (torch.rand(args.inception_batch, 1, 28, 28) * 255).to(torch.uint8).numpy()

    def inception_batch():
        inception_features(images, inception, batch_size=args.inception_batch, device="cpu", progress=False)

    cpu = torch.device("cpu")
    eval_net = build_net("iso_i_arelbo", "mnist").eval()
    pixels = (torch.rand(evaluate.DECODE_BATCH, 1, 28, 28) * 255).to(torch.uint8)

    def encode_decode():
        mu, _ = evaluate.encode_split(eval_net, pixels, cpu)
        evaluate.decode_to_uint8(eval_net, mu, cpu)

    return {
        "train_table3": (train_table3, 1, "step"),
        "train_section3": (train_section3, 1, "step"),
        "inception": (inception_batch, args.inception_batch, "image"),
        "encode_decode": (encode_decode, evaluate.DECODE_BATCH, "image"),
    }


def _flops(work) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()


def _matmul_peak() -> float:
    """GFLOP/s of the best of 5 float32 2048² matmuls: the machine's practical peak for this work."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def child(args) -> None:
    from arelbo.core import allocator

    described = allocator.configure()
    import torch

    torch.set_num_threads(args.threads)
    result = {"allocator": described, "threads": args.threads, "paths": {}}
    for name, (work, units, unit) in _paths(args).items():
        if name not in args.paths:
            continue
        flops = _flops(work)
        for _ in range(args.warmup):
            work()
        rounds = []
        for _ in range(args.rounds):
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            work()
            wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
            user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            rounds.append((wall, after.ru_minflt - before.ru_minflt, user, system))
        wall, faults, user, system = min(rounds)
        result["paths"][name] = {
            "unit": unit,
            "s_per_unit": wall / units,
            "gflops": flops / wall / 1e9,
            "faults_per_unit": faults / units,
            "kernel_share": system / max(user + system, 1e-9),
        }
    result["matmul_gflops"] = _matmul_peak()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the settings (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (make quick's jobs: 1)")
    parser.add_argument("--inception-batch", type=int, default=64, help="images a batch (make quick's fid.batch_size)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each path before timing")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each path (the fastest is kept)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--channels-last", action="store_true", help="the training nets in NHWC (oneDNN)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    os.chdir(REPO)
    passed = [a for a in sys.argv[1:] if a != "--child"]
    results: dict[str, list[dict]] = {s: [] for s in args.settings}
    for _ in range(args.repeats):
        for setting in args.settings:
            env = {k: v for k, v in os.environ.items() if k not in ("ARELBO_MALLOC", "GLIBC_TUNABLES")}
            done = subprocess.run(
                [sys.executable, __file__, *passed, "--child"],
                env={**env, **SETTINGS[setting]},
                capture_output=True,
                text=True,
                check=True,
            )
            results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    peak = max(r["matmul_gflops"] for runs in results.values() for r in runs)
    print(f"{args.threads} thread(s); matmul peak {peak:.0f} GFLOP/s (float32 2048², best of the run)")
    for setting, runs in results.items():
        print(f"  {setting}: {runs[0]['allocator']}")
    print(f"{'path':15s} {'setting':7s} {'s/unit':>10s} {'GFLOP/s':>8s} {'of peak':>8s} ", end="")
    print(f"{'faults/unit':>12s} {'kernel':>7s}")
    for name in args.paths:
        best = {}
        for setting, runs in results.items():
            fastest = min((r["paths"][name] for r in runs), key=lambda p: p["s_per_unit"])
            best[setting] = fastest["s_per_unit"]
            print(
                f"{name:15s} {setting:7s} {fastest['s_per_unit']:10.5f} {fastest['gflops']:8.1f} "
                f"{fastest['gflops'] / peak:8.0%} {fastest['faults_per_unit']:12.0f} {fastest['kernel_share']:7.1%}"
                f"  ({fastest['unit']})"
            )
        if {"system", "kept"} <= best.keys():
            print(f"{'':15s} speed-up kept/system {best['system'] / best['kept']:.2f}x")


if __name__ == "__main__":
    main()
