"""Population step throughput vs a plain PyTorch-autograd GRPO update (DESIGN.md §2).

Both sides do the same work per agent update: Q queries x G = 8 sampled trajectories of the
3-logit DS agent (K = 8), group-normalised advantages, the surrogate plus a per-token k1 KL
penalty (in-loss placement, w(L) = L on sampling actions), one SGD step. The torch side is
what a researcher would write: build log pi(tau) per trajectory with autograd and call
backward, agent by agent. Prints agent-updates/s of each and their ratio, measured in one run.

    python benchmarks/bench_population.py [--agents 1024] [--steps 20] [--torch-updates 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.model import AgentSpec  # noqa: E402
from sim.objectives import ObjectiveConfig  # noqa: E402
from sim.optim import OptimiserConfig  # noqa: E402
from sim.population import (  # noqa: E402
    LearnerConfig,
    PopulationConfig,
    PopulationModel,
    homogeneous,
)

K, G, L, BETA, LR = 8, 8, 100.0, 0.01, 0.1


def bench_numba(n_agents: int, steps: int, queries: int) -> float:
    obj = ObjectiveConfig.parse("surrogate+kl", beta=BETA, kl_placement="in-loss")
    lc = LearnerConfig(AgentSpec(max_attempts=K, len_correct=L, len_wrong=L), obj,
                       OptimiserConfig(lr=LR))
    cfg = PopulationConfig(n_queries=queries, seed=0, record_every=None)
    PopulationModel(homogeneous(lc, 4), cfg, collect_model_vars=False).run(2)  # compile/load
    model = PopulationModel(homogeneous(lc, n_agents), cfg, collect_model_vars=False)
    t0 = time.perf_counter()
    model.run(steps)
    return n_agents * steps / (time.perf_counter() - t0)


def bench_torch(updates: int, queries: int) -> float:
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    theta = torch.zeros(3, requires_grad=True)
    theta_ref = torch.zeros(3)
    opt = torch.optim.SGD([theta], lr=LR)
    t0 = time.perf_counter()
    for _ in range(updates):
        opt.zero_grad()
        loss = torch.zeros(())
        for _q in range(queries):
            logps, kls, rewards = [], [], []
            for _i in range(G):
                lp = torch.zeros(())
                kl = torch.zeros(())
                correct = False
                for k in range(K):
                    ls = torch.nn.functional.logsigmoid(theta)
                    lns = torch.nn.functional.logsigmoid(-theta)
                    rs = torch.nn.functional.logsigmoid(theta_ref)
                    rns = torch.nn.functional.logsigmoid(-theta_ref)
                    correct = bool(torch.rand((), generator=gen) < ls[0].exp())
                    a, ra = (ls[0], rs[0]) if correct else (lns[0], rns[0])
                    lp = lp + a
                    kl = kl + L * (a - ra)
                    if k == K - 1:
                        break
                    if correct:
                        stop = bool(torch.rand((), generator=gen) < ls[1].exp())
                        d, rd = (ls[1], rs[1]) if stop else (lns[1], rns[1])
                    else:
                        stop = bool(torch.rand((), generator=gen) >= ls[2].exp())
                        d, rd = (lns[2], rns[2]) if stop else (ls[2], rs[2])
                    lp = lp + d
                    kl = kl + (d - rd)
                    if stop:
                        break
                logps.append(lp)
                kls.append(kl)
                rewards.append(1.0 if correct else 0.0)
            r = torch.tensor(rewards)
            adv = (r - r.mean()) / (r.std() + 1e-4)
            loss = loss - (adv * torch.stack(logps)).mean() + BETA * torch.stack(kls).mean()
        (loss / queries).backward()
        opt.step()
    return updates / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--torch-updates", type=int, default=100)
    args = ap.parse_args()
    import numba

    threads = numba.get_num_threads()
    nb = bench_numba(args.agents, args.steps, args.queries)
    numba.set_num_threads(1)  # the like-for-like number: torch runs on one thread
    nb1 = bench_numba(args.agents, args.steps, args.queries)
    numba.set_num_threads(threads)
    print(f"numba population step: {nb:,.0f} agent-updates/s on {threads} threads, "
          f"{nb1:,.0f} on 1 thread ({args.agents} agents x {args.steps} steps, "
          f"{args.queries} queries x G={G})")
    try:
        th = bench_torch(args.torch_updates, args.queries)
    except ImportError:
        print("torch not installed: pip install torch (CPU) to run the baseline")
        return
    print(f"torch autograd GRPO:   {th:,.1f} agent-updates/s ({args.torch_updates} updates, "
          "1 thread)")
    print(f"speed-up: {nb / th:,.0f}x all threads, {nb1 / th:,.0f}x thread for thread "
          "(target >= 50x)")


if __name__ == "__main__":
    main()
