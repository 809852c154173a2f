"""Deterministic training on exact expected gradients (the mean-field reference dynamics).

The population trainer (sim.population) samples; this one follows the expected gradient,
so it is noise-free and fast enough for fitting (analysis.fit) and for checking that the
sampled populations drift the same way. Training uses the in-distribution tasks only, each
with equal weight (DESIGN.md §1); the reference policy is reset every `ref_update_every`
steps (DESIGN §2, the paper's Figure 1 cycles). The optimiser's update budget (global norm
clipping, Adam's shared second moment; DESIGN §2) acts in sim.optim.ascent_step, the coupling
of the logits in the AgentSpec's Jacobians. No stability bound is imposed here: the fit
(analysis.fit) treats SGD's learning rate as a fitted amount of training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.attribution import attribution_ratio
from sim.columns import column
from sim.model import AgentSpec
from sim.objectives import ObjectiveConfig, combine, exact_logit_gradients
from sim.optim import OptimiserConfig, ascent_step


def expected_gradients(spec: AgentSpec, obj: ObjectiveConfig, phi: np.ndarray,
                       phi_ref: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-term gradients averaged over the ID tasks: (on the logits, on phi)."""
    jac, logits, ref = spec.jacobians(), spec.task_logits(phi), spec.task_logits(phi_ref)
    ids = spec.ladder.id_indices
    on_logits = {k: np.zeros(3) for k in obj.kinds}
    on_phi = {k: np.zeros(spec.n_params) for k in obj.kinds}
    for t in ids:
        grads = exact_logit_gradients(logits[t], ref[t], spec, obj)
        for k, g in grads.items():
            on_logits[k] += g / len(ids)
            on_phi[k] += jac[t].T @ g / len(ids)
    return on_logits, on_phi


def train_expected(spec: AgentSpec, obj: ObjectiveConfig, phi0: np.ndarray, steps: int,
                   optimiser: OptimiserConfig | None = None,
                   ref_update_every: int | None = None, phi_ref: np.ndarray | None = None,
                   record_every: int = 1) -> tuple[np.ndarray, pd.DataFrame]:
    """Follow the exact expected gradient for `steps` steps; returns (phi, history).

    history has the population trainer's convention (sim.population): row `step = u` holds
    the parameters after u updates, p, q1, q2 per task, and the ID-mean logit gradients of
    update u per term and total (g_s[term], g_1[term], g_2[term], ratio[term]; NaN in row 0);
    `ref_reset` marks an update that used a freshly reset reference.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if ref_update_every is not None and ref_update_every < 1:
        raise ValueError("ref_update_every must be >= 1 (or None: never)")
    optimiser = optimiser or OptimiserConfig()
    phi = np.array(phi0, dtype=float)
    ref = phi.copy() if phi_ref is None else np.array(phi_ref, dtype=float)
    state = np.zeros((2, spec.n_params))
    rows = [_record(spec, obj, 0, phi, None, False)]
    for step in range(1, steps + 1):
        reset = bool(ref_update_every) and step > 1 and (step - 1) % ref_update_every == 0
        if reset:
            ref = phi.copy()
        on_logits, on_phi = expected_gradients(spec, obj, phi, ref)
        phi = phi + ascent_step(optimiser, combine(on_phi, obj), state, step)
        if step % record_every == 0 or step == steps:
            rows.append(_record(spec, obj, step, phi, on_logits, reset))
    return phi, pd.DataFrame(rows)


def _record(spec: AgentSpec, obj: ObjectiveConfig, step: int, phi: np.ndarray,
            on_logits: dict[str, np.ndarray] | None, ref_reset: bool) -> dict[str, float]:
    row: dict[str, float] = {"step": step, "ref_reset": ref_reset}
    for name, value in zip(spec.parameter_names(), phi, strict=True):
        row[name] = float(value)
    probs = 1 / (1 + np.exp(-spec.task_logits(phi)))
    for t, task in enumerate(spec.ladder.names):
        for x, comp in enumerate(("p", "q1", "q2")):
            row[column(comp, task)] = float(probs[t, x])
    if on_logits is None:  # before the first update: no gradient yet
        on_logits = {k: np.full(3, np.nan) for k in obj.kinds}
    terms = dict(on_logits)
    terms["total"] = combine(on_logits, obj)
    for k, g in terms.items():
        for x, comp in enumerate(("s", "1", "2")):
            row[column(f"g_{comp}", k)] = float(g[x])
        row[column("ratio", k)] = attribution_ratio(g)
    return row
