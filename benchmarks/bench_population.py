"""Population step throughput: Numba vs a batched PyTorch GRPO step, thread for thread.

Both sides do the same work per agent update (DESIGN.md §1-§2): Q queries x G trajectories
of the 3-logit DS agent (K attempts, forced stop at K), group-normalised advantages, the
surrogate plus a per-token k1 KL penalty in the loss (w(L) = L on sampling actions, beta),
one SGD step on phi through logits = b + J phi. The torch side is vectorised over agents,
queries and trajectories (one tensor program per step) in three variants:

  autograd   log pi(tau) from the six action-type counts (log pi is linear in the six
             log-sigmoids), loss.backward()
  analytic   the same counts, the gradient in closed form (no autograd graph)
  compiled   `analytic` under torch.compile (inductor)

`--validate` (on by default) first checks the batched torch gradient against the per-agent
autograd GRPO loop and both against the exact expected gradient (sim.objectives): means
within Monte-Carlo error. Then, for each thread count, rounds alternate between Numba and
every torch variant; the best round of each is reported, and the ratio to the strongest
torch variant at the same thread count.

    python benchmarks/bench_population.py [--agents 1024] [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Waiting OpenMP workers sleep instead of spinning (unless the caller says otherwise): on a
# shared, oversubscribed machine spinning workers of either side (torch's and Numba's omp
# layer) collapse to a fraction of their one-thread speed. Set before either library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.dynamics import expected_gradients  # noqa: E402
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
SPEC = AgentSpec(max_attempts=K, len_correct=L, len_wrong=L)
OBJECTIVE = ObjectiveConfig.parse("surrogate+kl", beta=BETA, kl_placement="in-loss",
                                  group_size=G)
LEARNER = LearnerConfig(SPEC, OBJECTIVE, OptimiserConfig(lr=LR))  # sim.stability accepts it


def numba_model(n_agents: int, queries: int, seed: int = 0) -> PopulationModel:
    cfg = PopulationConfig(n_queries=queries, seed=seed, record_every=None)
    return PopulationModel(homogeneous(LEARNER, n_agents), cfg, collect_model_vars=False)


def time_numba(model: PopulationModel, steps: int) -> float:
    """agent-updates/s of `steps` steps of PopulationModel (parallel when threads > 1)."""
    model.parallel = model.n_agents >= 64 and _numba().get_num_threads() > 1
    t0 = time.perf_counter()
    model.run(steps)
    return model.n_agents * steps / (time.perf_counter() - t0)


def _numba():
    import numba

    return numba


# ----------------------------------------------------------------------------- batched torch
def batched_logit_grads(logits, u, tokens: float = L, beta: float = BETA, eps: float = 1e-4):
    """Ascent gradient of surrogate - beta KL (per-token k1, in loss) on each query's logits,
    from uniforms u (..., G, K, 2); logits (..., 3). Counts + closed form: log pi(tau) =
    sum_type n_type log sigmoid(+-theta), d log sigmoid(+-theta)/d theta = 1 - sigmoid or
    -sigmoid. Returns (..., 3) and the mean reward."""
    import torch

    prob = torch.sigmoid(logits).unsqueeze(-2).unsqueeze(-2)  # (..., 1, 1, 3)
    counts, reward = _counts(prob, u)
    mean = reward.mean(-1, keepdim=True)
    adv = (reward - mean) / (reward.std(-1, keepdim=True) + eps)  # (..., G), ddof 1
    # per type: the surrogate's A_i minus the KL's beta w_t (w = L on candidates, 1 decisions)
    w = torch.tensor([tokens, tokens, 1.0, 1.0, 1.0, 1.0], dtype=u.dtype)
    sums = ((adv.unsqueeze(-1) - beta * w) * counts).mean(-2)  # (..., 6)
    p, q1, q2 = prob[..., 0, 0, 0], prob[..., 0, 0, 1], prob[..., 0, 0, 2]
    grad = torch.stack([sums[..., 0] * (1 - p) - sums[..., 1] * p,
                        sums[..., 3] * (1 - q1) - sums[..., 2] * q1,
                        sums[..., 4] * (1 - q2) - sums[..., 5] * q2], -1)
    return grad, reward.mean()


def _counts(prob, u):
    """Six action-type counts (..., G, 6) and rewards (..., G) of trajectories drawn from u."""
    import torch

    correct = u[..., 0] < prob[..., 0]
    stop = torch.where(correct, u[..., 1] < prob[..., 1], u[..., 1] >= prob[..., 2])
    stop[..., -1] = True  # forced stop at K
    made = (stop.cumsum(-1) - stop.to(torch.int64)) == 0  # no STOP before attempt k
    nc = (correct & made).sum(-1).to(u.dtype)
    n = made.sum(-1).to(u.dtype)
    last = (correct & made & stop).sum(-1).to(u.dtype)  # the final answer is correct: R
    stopped = (n < u.shape[-2]).to(u.dtype)  # a STOP decision was emitted (not forced)
    counts = torch.stack([nc, n - nc, nc - last, last * stopped, n - nc - (1 - last),
                          (1 - last) * stopped], -1)
    return counts, last


def autograd_logit_grads(logits, u, tokens: float = L, beta: float = BETA, eps: float = 1e-4):
    """`batched_logit_grads` by autograd: loss from the counts, then backward."""
    import torch
    import torch.nn.functional as F

    theta = logits.detach().requires_grad_(True)
    prob = torch.sigmoid(theta.detach()).unsqueeze(-2).unsqueeze(-2)
    counts, reward = _counts(prob, u)
    adv = (reward - reward.mean(-1, keepdim=True)) / (reward.std(-1, keepdim=True) + eps)
    ls = torch.stack([F.logsigmoid(theta[..., 0]), F.logsigmoid(-theta[..., 0]),
                      F.logsigmoid(-theta[..., 1]), F.logsigmoid(theta[..., 1]),
                      F.logsigmoid(theta[..., 2]), F.logsigmoid(-theta[..., 2])], -1)
    logp = (counts * ls.unsqueeze(-2)).sum(-1)  # (..., G)
    w = torch.tensor([tokens, tokens, 1.0, 1.0, 1.0, 1.0], dtype=u.dtype)
    kl = (counts * w * ls.unsqueeze(-2)).sum(-1)  # k1: sum_t w_t (log pi - log pi_ref)
    loss = -(adv * logp).mean(-1).sum() + beta * kl.mean(-1).sum()
    loss.backward()
    return -theta.grad, reward.mean()


class TorchPopulation:
    """A population of A agents with parameters phi (A, P), trained by batched torch steps
    on the same tasks, Jacobians and round-robin ID queries as `PopulationModel`."""

    def __init__(self, model: PopulationModel, variant: str, queries: int, seed: int = 0,
                 dtype: str = "float64") -> None:
        import torch

        self.torch, self.variant, self.queries = torch, variant, queries
        self.dtype = getattr(torch, dtype)
        torch.manual_seed(seed)  # the uniforms are drawn inside the update (fused when compiled)
        la = model.learner_arrays
        self.jac = torch.tensor(la.jac, dtype=self.dtype)  # (A, T, 3, P)
        self.offsets = torch.tensor(la.offsets, dtype=self.dtype)
        self.id_tasks = model.shared.id_tasks.tolist()
        self.phi = torch.tensor(model.phi, dtype=self.dtype)
        self.step_count = 0
        grads = autograd_logit_grads if variant == "autograd" else batched_logit_grads
        self._update = self._make_update(grads)
        if variant == "compiled":
            self._update = torch.compile(self._update, dynamic=False)

    def _make_update(self, grads):
        torch, shape = self.torch, (self.phi.shape[0], self.queries, G, K, 2)

        def update(phi, jac, offsets):
            u = torch.rand(shape, dtype=phi.dtype)
            logits = offsets + (jac @ phi.unsqueeze(1).unsqueeze(-1)).squeeze(-1)  # (A, Q, 3)
            g, reward = grads(logits, u)
            return phi + LR * (jac.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1).mean(1)
        return update

    def step(self) -> None:
        q = self.queries
        tasks = [self.id_tasks[(self.step_count * q + i) % len(self.id_tasks)] for i in range(q)]
        self.step_count += 1
        jac, offsets = self.jac[:, tasks], self.offsets[:, tasks]
        if self.variant == "autograd":
            self.phi = self._update(self.phi, jac, offsets).detach()
        else:
            with self.torch.no_grad():
                self.phi = self._update(self.phi, jac, offsets)


def time_torch(pop: TorchPopulation, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        pop.step()
    return pop.phi.shape[0] * steps / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- per agent
def per_agent_logit_grad(theta0, gen, queries: int):
    """The plain per-agent autograd GRPO loop (what a researcher writes first): ascent
    gradient on one agent's logits, log pi(tau) built action by action."""
    import torch

    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    theta_ref = torch.tensor(theta0, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    for _q in range(queries):
        logps, kls, rewards = [], [], []
        for _i in range(G):
            lp = kl = torch.zeros((), dtype=torch.float64)
            correct = False
            for k in range(K):
                ls, lns = (torch.nn.functional.logsigmoid(theta),
                           torch.nn.functional.logsigmoid(-theta))
                rs, rns = (torch.nn.functional.logsigmoid(theta_ref),
                           torch.nn.functional.logsigmoid(-theta_ref))
                correct = bool(torch.rand((), generator=gen) < ls[0].exp())
                a, ra = (ls[0], rs[0]) if correct else (lns[0], rns[0])
                lp, kl = lp + a, kl + L * (a - ra)
                if k == K - 1:
                    break
                if correct:
                    stop = bool(torch.rand((), generator=gen) < ls[1].exp())
                    d, rd = (ls[1], rs[1]) if stop else (lns[1], rns[1])
                else:
                    stop = bool(torch.rand((), generator=gen) >= ls[2].exp())
                    d, rd = (lns[2], rns[2]) if stop else (ls[2], rs[2])
                lp, kl = lp + d, kl + (d - rd)
                if stop:
                    break
            logps.append(lp)
            kls.append(kl)
            rewards.append(1.0 if correct else 0.0)
        r = torch.tensor(rewards, dtype=torch.float64)
        adv = (r - r.mean()) / (r.std() + 1e-4)
        loss = loss - (adv * torch.stack(logps)).mean() + BETA * torch.stack(kls).mean()
    (loss / queries).backward()
    return -theta.grad.numpy()


def validate(theta=(0.4, 0.6, -0.3), n_batched: int = 20000, n_per_agent: int = 300,
             queries: int = 4, z: float = 4.5) -> bool:
    """Mean ascent gradients on the logits at `theta` (pi_ref = pi): batched torch (float64
    and float32), per-agent autograd and the exact expectation agree within z standard
    errors. Prints the table; returns whether all agree."""
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    logits = torch.tensor(theta, dtype=torch.float64).expand(n_batched, queries, 3)
    rows = {}
    for name, fn, dtype in [("batched analytic f64", batched_logit_grads, torch.float64),
                            ("batched analytic f32", batched_logit_grads, torch.float32),
                            ("batched autograd f64", autograd_logit_grads, torch.float64)]:
        u = torch.rand((n_batched, queries, G, K, 2), generator=gen, dtype=dtype)
        g = fn(logits.to(dtype), u)[0].mean(1).double().numpy()  # mean over queries
        rows[name] = (g.mean(0), g.std(0) / np.sqrt(n_batched))
    g = np.array([per_agent_logit_grad(theta, gen, queries) for _ in range(n_per_agent)])
    rows["per-agent autograd"] = (g.mean(0), g.std(0) / np.sqrt(n_per_agent))
    phi = np.asarray(theta)  # one task, J = I: phi are the logits
    exact = sum(w * expected_gradients(SPEC, OBJECTIVE, phi, phi)[0][k]
                for k, w in OBJECTIVE.weights)
    ok = True
    ref_mean, ref_se = rows["per-agent autograd"]
    print(f"validation at logits {theta} (pi_ref = pi), mean ascent gradient +- s.e.:")
    print(f"  {'exact (sim.objectives)':24s} " + "  ".join(f"{x:+.5f}" for x in exact))
    for name, (mean, se) in rows.items():
        agree = (np.all(np.abs(mean - exact) < z * se + 1e-12)
                 and np.all(np.abs(mean - ref_mean) < z * np.hypot(se, ref_se) + 1e-12))
        ok &= bool(agree)
        print(f"  {name:24s} " + "  ".join(f"{m:+.5f}+-{s:.5f}" for m, s in zip(mean, se,
                                                                             strict=True))
              + ("" if agree else "   DISAGREES"))
    print(f"  all within {z} s.e. of the exact gradient and of the per-agent loop: {ok}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default=None, help="comma list (default: 1 and all)")
    ap.add_argument("--dtype", default="float64,float32", help="torch dtypes to time")
    ap.add_argument("--variants", default="autograd,analytic,compiled")
    ap.add_argument("--no-validate", dest="validate", action="store_false")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("torch not installed: pip install torch (CPU) to run the baseline")
    numba = _numba()
    all_threads = numba.get_num_threads()
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, all_threads}))
    if args.validate and not validate(queries=args.queries):
        sys.exit("the batched torch baseline disagrees with the per-agent loop")
    a, s, q = args.agents, args.steps, args.queries
    print(f"{a} agents x {s} steps, {q} queries x G={G}, K={K}, L={L:g}, beta {BETA}, "
          f"SGD lr {LR}; best of {args.rounds} rounds (agent-updates/s)")
    for n_threads in threads:
        numba.set_num_threads(n_threads)
        torch.set_num_threads(n_threads)
        contenders = {"numba": numba_model(a, q)}
        for dtype in args.dtype.split(","):
            for variant in args.variants.split(","):
                contenders[f"torch {variant} {dtype}"] = TorchPopulation(
                    numba_model(a, q), variant, q, dtype=dtype)
        for c in contenders.values():  # compile / load / warm up
            c.run(2) if isinstance(c, PopulationModel) else [c.step() for _ in range(3)]
        best = dict.fromkeys(contenders, 0.0)
        for _ in range(args.rounds):
            for name, c in contenders.items():
                rate = (time_numba(c, s) if isinstance(c, PopulationModel)
                        else time_torch(c, s))
                best[name] = max(best[name], rate)
        strongest = max((n for n in best if n != "numba"), key=best.get)
        print(f"{n_threads} thread(s):")
        for name, rate in best.items():
            print(f"  {name:26s} {rate:12,.0f}")
        print(f"  numba / strongest torch ({strongest}): {best['numba'] / best[strongest]:.2f}x"
              f" thread for thread (target >= 5x)")


if __name__ == "__main__":
    main()
