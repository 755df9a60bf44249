"""Cross-check against Avalanche: the same stream through Avalanche's Naive, EWC, Replay and
LwF strategies and through bioplaus (fine-tuning, `ewc`, `replay`, `lwf`), side by side.

Same stream: the tasks are bioplaus's own (`build_tasks` of the config: same task order,
the same permutations from the run seed, the same normalisation, the same per-task training
and test subsets) handed to Avalanche as tensors (`tensors_benchmark`, task label 0). Same net: a
torch ``nn.Sequential`` of bias-free Linear + ReLU layers loaded with the initial weights of
bioplaus's net for the seed (the script checks both give the same logits). Same optimiser:
SGD lr 0.1, no momentum, batch 64, one epoch per task; a new optimiser state per task is
moot for plain SGD. Both are evaluated with the same code (accuracy of the argmax of the
logits on each task's test set after every task), so ACC / BWT come from the same formulas
(`acc_metrics`).

Known differences (the script keeps each library's own definition):
  - batch order: bioplaus's seeded loader vs Avalanche's shuffled DataLoader;
  - EWC: bioplaus uses the empirical Fisher of per-sample gradients on 200 samples,
    penalty gradient λF(θ-θ*) capped at 1/η; Avalanche averages squared mini-batch
    gradients over the whole task (a smaller Fisher) with penalty λ Σ F (θ-θ*)² (gradient
    2λF(θ-θ*)); the script gives Avalanche λ/2 and mode "online" (decay 1), so the penalty
    formulas agree and only the Fisher estimates differ;
  - Replay: bioplaus's reservoir buffer is filled online (replay starts in task 0);
    Avalanche's Replay fills its experience-balanced buffer at the end of each task. Both
    replay one memory sample per current sample (batch 64 + 64);
  - LwF: the same loss (KL at temperature T over the classes seen, weight α = λ).

Avalanche cannot be installed with its dependencies here (no CPU torchvision for torch
2.13 is reachable, only a CUDA build whose compiled ops do not load): install it apart,

    pip install --no-deps --target /tmp/avl "avalanche-lib==0.6.*" "torchvision==0.28.0" \\
        pytorchcv gputil torchmetrics lightning-utilities dill gdown beautifulsoup4 soupsieve

and run with ``--avalanche-path /tmp/avl``: the script then stubs the modules Avalanche
imports but this comparison never calls (torchvision's compiled-op registrations, wandb,
tensorboard, qpsolvers) before importing it.

Run:  python benchmarks/avalanche_crosscheck.py --avalanche-path /tmp/avl     # -> results/avalanche_crosscheck.*
      python benchmarks/avalanche_crosscheck.py --avalanche-path /tmp/avl --quick
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save  # noqa: E402
from bioplaus.api import run  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.experiments.continual import acc_metrics, build_tasks  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.record import open_run  # noqa: E402

BASE = ROOT / "sims" / "ft_pfashion_rate.toml"
METHODS = {
    "naive": ("Naive / fine-tuning", []),
    "ewc": ("EWC", ['plugins=[{name="ewc", lam=100.0, samples=200}]']),
    "replay": ("Replay, 200 samples", ['plugins=[{name="replay", size=200, ratio=1.0}]']),
    "lwf": ("LwF", ['plugins=[{name="lwf", lam=1.0, temperature=2.0}]']),
}


def import_avalanche(path: str) -> None:
    """Put Avalanche on the path, with stubs for what it imports but this script never calls."""
    if path:
        sys.path.insert(0, path)
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    for name in ("wandb", "wandb.data_types", "torch.utils.tensorboard", "qpsolvers"):
        if name not in sys.modules:
            try:
                __import__(name)
            except Exception:  # noqa: BLE001 - any import failure: the stub stands in
                stub = types.ModuleType(name)
                stub.SummaryWriter = object  # type: ignore[attr-defined]
                sys.modules[name] = stub
    warnings.filterwarnings("ignore")


def tensors(loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows of a task loader, in order, its permutation applied."""
    x, y = loader.inner.x, loader.inner.y
    if loader.perm is not None:
        x = x.flatten(1)[:, loader.perm].reshape(x.shape)
    return x.reshape(len(x), -1).contiguous(), y


def torch_net(cfg: Any, n_in: int, n_classes: int) -> nn.Sequential:
    """bioplaus's rate MLP for the seed as a plain nn.Sequential (same initial weights)."""
    net = build_net(cfg.network, (n_in,), n_classes, seed=cfg.seed)
    mods: list[nn.Module] = []
    for i, layer in enumerate(net.layers):
        lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[0], bias=False)
        lin.weight.data.copy_(layer.weight.detach())
        mods.append(lin)
        if i < len(net.layers) - 1:
            mods.append(nn.ReLU())
    seq = nn.Sequential(*mods)
    x = torch.randn(5, n_in)
    with torch.no_grad():
        assert torch.allclose(net(x), seq(x), atol=1e-5), "the torch twin does not compute bioplaus's net"
    return seq


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    out = torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    return float((out.argmax(1) == y).float().mean())


def run_avalanche(method: str, cfg: Any, tasks: list[Any], n_classes: int) -> np.ndarray:
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.training import EWC, LwF, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(cfg.seed)
    train = [tensors(t.train) for t in tasks]
    test = [tensors(t.test) for t in tasks]
    # one task label for all (domain-incremental: no task id), one experience per task
    bench = tensors_benchmark(train_tensors=train, test_tensors=test, task_labels=[0] * len(tasks))
    model = torch_net(cfg, train[0][0].shape[1], n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.rule.lr)
    kw = {"train_mb_size": cfg.data.batch_size, "train_epochs": cfg.section("continual").epochs_per_task,
          "eval_mb_size": 1000, "evaluator": EvaluationPlugin(loggers=[]), "device": "cpu"}
    crit = nn.CrossEntropyLoss()
    if method == "naive":
        strat = Naive(model=model, optimizer=opt, criterion=crit, **kw)
    elif method == "ewc":
        strat = EWC(model=model, optimizer=opt, criterion=crit, ewc_lambda=50.0, mode="online", decay_factor=1.0, **kw)
    elif method == "replay":
        strat = Replay(model=model, optimizer=opt, criterion=crit, mem_size=200, **kw)
    else:
        strat = LwF(model=model, optimizer=opt, criterion=crit, alpha=1.0, temperature=2.0, **kw)
    rows = []
    for exp in bench.train_stream:
        strat.train(exp)
        rows.append([accuracy(model, x, y) for x, y in test])
    return np.array(rows)


def run_bioplaus(method: str, cfg_over: list[str], out: Path) -> np.ndarray:
    res = run(load_config(BASE, cfg_over + METHODS[method][1]).to_dict(), out=out, progress=False, report=False,
              overwrite=True)
    with open_run(res.path) as rf:
        return np.asarray(rf.array("/continual/acc_matrix"), dtype=float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avalanche-path", default="", help="directory Avalanche was installed into (--target)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--limit-train", type=int, default=3000)
    ap.add_argument("--limit-test", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out-dir", default="runs/bench_avalanche")
    ap.add_argument("--quick", action="store_true", help="2 tasks of digits, nothing saved")
    args = ap.parse_args()
    import_avalanche(args.avalanche_path)
    torch.set_num_threads(1)
    common = ["train.threads=1", "train.report=false", "train.progress=false", "continual.stream=permuted",
              f"continual.n_tasks={args.tasks}", f"data.limit_train={args.limit_train}",
              f"data.limit_test={args.limit_test}"]
    if args.quick:
        common += ["data.dataset=digits", "continual.n_tasks=2", "network.hidden=[32]"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    res: dict[str, dict[str, list[dict[str, float]]]] = {m: {"bioplaus": [], "avalanche": []} for m in methods}
    t0 = time.perf_counter()
    for seed in args.seeds:
        over = [*common, f"seed={seed}"]
        cfg = load_config(BASE, over)
        tasks, stream, _ = build_tasks(cfg)
        for m in methods:
            for lib in ("bioplaus", "avalanche"):
                ts = time.perf_counter()
                R = (run_bioplaus(m, over, out / f"{m}_s{seed}.h5") if lib == "bioplaus"
                     else run_avalanche(m, cfg, tasks, stream.n_classes))
                met = acc_metrics(R)
                res[m][lib].append({**met, "seconds": time.perf_counter() - ts, "R": (100 * R).round(2).tolist()})
                print(f"seed {seed} {m:7s} {lib:9s} ACC {100 * met['ACC']:.2f} BWT {100 * met['BWT']:+.2f} "
                      f"({time.perf_counter() - ts:.0f} s)", flush=True)

    def mean(m: str, lib: str, k: str) -> tuple[float, float]:
        v = [100 * r[k] for r in res[m][lib]]
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    lines = ["| method | bioplaus ACC | Avalanche ACC | ΔACC | bioplaus BWT | Avalanche BWT |", "|---|---|---|---|---|---|"]
    rows = []
    for m in methods:
        (ab, sb), (aa, sa) = mean(m, "bioplaus", "ACC"), mean(m, "avalanche", "ACC")
        (bb, _), (ba, _) = mean(m, "bioplaus", "BWT"), mean(m, "avalanche", "BWT")
        lines.append(f"| {METHODS[m][0]} | {ab:.2f} ± {sb:.2f} | {aa:.2f} ± {sa:.2f} | {ab - aa:+.2f} | "
                     f"{bb:+.2f} | {ba:+.2f} |")
        rows.append({"method": m, "bioplaus_ACC": ab, "avalanche_ACC": aa, "delta": ab - aa,
                     "bioplaus_BWT": bb, "avalanche_BWT": ba, "runs": res[m]})
    wall = time.perf_counter() - t0
    head = (f"Avalanche 0.6 vs bioplaus, the same stream: {args.tasks if not args.quick else 2} permuted "
            f"{'digits' if args.quick else 'Fashion-MNIST'} tasks, {args.limit_train} training / {args.limit_test} "
            f"test images per task, rate MLP 784-800-800-10 (ReLU, no bias, same initial weights), SGD lr 0.1, batch "
            f"64, 1 epoch per task, seeds {args.seeds}; ACC / BWT in points (mean ± sd over seeds). "
            f"Wall {wall / 60:.1f} min, 1 thread.\n\n")
    text = head + "\n".join(lines)
    if args.quick or any(math.isnan(r["delta"]) for r in rows):
        print(text)
        return
    save("avalanche_crosscheck", {"overrides": common, "rows": rows, "wall_s": wall}, text)


if __name__ == "__main__":
    main()
