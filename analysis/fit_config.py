"""The fit's documented settings (DESIGN §1, §2, §4): `FitConfig`, its bounds and `FitError`.

Every choice of the fit that is not a free parameter is a field here (and, through
core.cli_options, an option of `fit` and `compare`), including the update budget of DESIGN §2
("Update budget": Adam's shared second moment, global gradient-norm clipping, the coupling of
the trained logits) with which the fit's exact-gradient dynamics train (sim.dynamics,
sim.optim). analysis.fit re-exports every name; the fit itself is there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.cli_options import doc
from core.regimes import PAPER_RL_KL
from sim.model import Coupling, parse_coupling
from sim.optim import SECOND_MOMENTS, OptimiserConfig

TRANSFER_MODES = ("shared", "single", "per-regime", "global-decisions", "flat-decisions")
# transfer "flat-decisions": ell_d far beyond the ladder's span, so each decision's kernel
# exp(-gap / ell_d) is flat over every task (within span / 1e4 of 1: the kernel agent's
# large-ell limit; at the masked fit of docs/results/simulator/fit_settings_compared.md q2
# moves by 0.001 from ell_d 1e3 to 1e4)
FLAT_ELL_D = 1e4
# the transfers whose decisions have no free length scale: ell_s is their only one
ELL_S_ONLY_TRANSFERS = ("global-decisions", "flat-decisions")
LR_MODES = ("per-regime", "sft-shared", "no-refl-bound", "sft-limits")
# the learning-rate modes that leave SFT (no reflection) untrained (lr 0) and the one that
# trains SFT (reflection) at its lr's upper bound (analysis.fit_model.fixed_lr)
UNTRAINED_NO_REFLECTION_MODES = ("no-refl-bound", "sft-limits")
REFLECTION_AT_TOP_LR_MODES = ("sft-limits",)
# search bounds of the free parameters (analysis.fit_model names them); Adam's step is about
# lr per parameter and step, so lr near 1 moves p or q by more than 0.5 in a step (chaos);
# SGD's lr_frac is the learning rate over the stability bound (sim.stability), at most 1
BOUNDS = {"ell_s": (0.05, 50.0), "ell_d": (0.05, 50.0), "ell": (0.05, 50.0),
          "lr": (1e-6, 50.0), "adam_lr": (1e-5, 1.0), "lr_frac": (1e-6, 1.0),
          "beta": (1e-5, 10.0), "base_d_half": (0.05, 50.0), "base_slope": (0.01, 20.0),
          "base_floor": (1e-6, 0.5)}
BASE_MODES = ("floored", "linear", "exact")
# Adam's learning-rate bound in the fit. Adam moves each logit by about lr per step, and a
# step moves p or q by about 0.95 lr here; from moves of about 0.1 on (lr ~ 0.1, clip 1, shared
# second moment) nearby learning rates end on different trajectories and the SSE turns rough at
# the 1% scale (measured at 200 and 400 steps, fit_settings_compared.md). Half that keeps the
# fit in the small-step regime that real training (per-step changes far smaller) lives in; the
# steps then have to supply the amount of training (FitConfig.steps). SGD has its own bound.
ADAM_SMALL_STEP_LR = 0.05
# a free parameter is identified when its 95% interval spans less than this factor (and the SSE
# is smooth enough for an interval to mean anything: analysis.fit_model.ROUGH_LIMIT)
MAX_CI_RATIO = 10.0


# Upper bounds of the fit's settings: beyond them a run takes hours or its numbers overflow
# exact gradients by dynamic programming (sim.exact_dp) cost O(K) per task and step: K = 1000
# keeps one fit evaluation (3 regimes x 200 steps) within seconds
MAX_FIT_ATTEMPTS = 1000
MAX_FIT_LENGTH = 1e6  # tokens per candidate answer (the paper's limit is 8,192, DESIGN §5)
MAX_FIT_STEPS = 100_000  # training steps per regime and evaluation
MAX_FIT_NFEV = 10_000  # least-squares evaluations
MAX_FIT_STARTS = 9  # the coarse grid's length-scale combinations (analysis.fit_model)


class FitError(ValueError):
    """A fit that cannot be set up (one-line message, for the CLI)."""


@dataclass(frozen=True)
class FitConfig:
    """Documented, fixed choices of the fit (everything not in `free`)."""

    max_attempts: int = field(default=16, metadata=doc(
        "K: attempts at most, in training (exact gradients) and in Acc_K; 16 is chosen by the "
        "Table 1 fit (RMSE <= 6 pp from K = 12 on, at 200 steps; "
        "docs/results/simulator/fit_settings_compared.md)", "§2, §4"))
    q1_base: float = field(default=0.9, metadata=doc("base model's q1 (fixed), in (0, 1)", "§4"))
    q2_base: float = field(default=0.1, metadata=doc("base model's q2 (fixed), in (0, 1)", "§4"))
    length: float = field(default=100.0, metadata=doc("L_C = L_W, tokens per answer", "§2"))
    steps: int = field(default=2000, metadata=doc(
        "training steps per regime (the lr is fitted); with max_adam_lr they bound the amount "
        "of training lr x steps: 2000 x 0.05 = 100 puts the Table 1 rows' best fits inside "
        "the range (1000 x 0.05 did not: lr[SFT reflection] stopped at the bound; "
        "docs/results/simulator/fit_settings_compared.md)", "§2"))
    optimiser: str = field(default="adam", metadata=doc("optimiser", "§2", ("sgd", "adam")))
    second_moment: str = field(default="shared", metadata=doc(
        "Adam's second moment: shared (one scalar) or per-parameter", "§2", SECOND_MOMENTS))
    max_grad_norm: float = field(default=1.0, metadata=doc(
        "global gradient-norm clip (TRL and verl: 1.0); 0: off", "§2"))
    max_adam_lr: float = field(default=ADAM_SMALL_STEP_LR, metadata=doc(
        "Adam's learning-rate bound in the fit (the small-step regime: at one-step moves of p "
        "or q near 0.1 the trained endpoint turns sensitive to lr; "
        "docs/results/simulator/fit_settings_compared.md); in (0, 1]", "§2"))
    coupling: Coupling = field(default=None, metadata=doc("M in b(t) + M J_t phi", "§2"))
    beta: float = field(default=PAPER_RL_KL.beta, metadata=doc("KL coefficient of RL", "§2"))
    fit_beta: bool = field(default=False, metadata=doc("fit beta too"))
    ft_share: float = field(default=0.5, metadata=doc("F->T share of reflection SFT data", "§2"))
    mask_wrong_attempts: bool = field(default=False, metadata=doc(
        "no SFT loss on the reflection data's wrong first attempts (sim.objectives.SFTData); "
        "trained on, they pin SFT reflection's ID p near 1/(1 + F->T share)", "§2"))
    decomposition: bool = field(default=False, metadata=doc(
        "fit the observed p, q1, q2 per task too (columns p/q1/q2, a stated range "
        "<name>_low/<name>_high, or a real run's calibration.csv): accuracy alone does not "
        "identify them (analysis.fit_decomposition)",
        "§4"))
    acc_floor: float = field(default=0.005, metadata=doc(
        "observed accuracies are clipped to [floor, 1 - floor] to solve b_s; in (0, 0.5)", "§1"))
    transfer: str = field(default="shared", metadata=doc(
        "length scales: shared (ell_s, ell_d), single (one ell: ell_d = ell_s), per-regime "
        "(one ell each), global-decisions (ell_s; ell_d = inf: each decision is one logit "
        "shared by every task, sim.model's logit agent) or flat-decisions (ell_s; ell_d at "
        "the kernel's flat limit, 1e4, the fit reports a 95% lower bound on it)", "§1",
        TRANSFER_MODES))
    base: str = field(default="floored", metadata=doc(
        "base offsets b_s(t): floored (p falls linearly in logit down to a floor: b_s = "
        "logaddexp(slope * (d_half - d(t)), logit(floor)), three parameters fitted to the "
        "untrained rows), linear (b_s = slope * (d_half - d(t)), two) or exact (solved per "
        "task from the Base row)", "§1", BASE_MODES))
    lr_mode: str = field(default="no-refl-bound", metadata=doc(
        "learning rates: one per regime; sft-shared (both SFT rows share lr[SFT]); "
        "no-refl-bound (SFT no-reflection is not trained: its row is the base model's, and "
        "the fit reports a 95% upper bound on its lr); or sft-limits (as no-refl-bound, and "
        "SFT reflection is trained at its lr's upper bound (Adam: max_adam_lr; "
        "SGD: the stability bound): the fit reports a 95% "
        "lower bound on its lr, and the other parameters' intervals hold at that amount of "
        "training only)",
        "§4, §5", LR_MODES))
    max_nfev: int = field(default=40, metadata=doc("least-squares evaluations at most"))
    grid_start: bool = field(default=True, metadata=doc("start from a coarse grid's best point"))
    starts: int = field(default=3, metadata=doc(
        "local fits from the coarse grid's best points (length-scale combinations); the "
        "lowest SSE whose training is not chaos is kept (needs grid_start)"))
    quick: bool = field(default=False, metadata=doc("few steps and evaluations (tests)"))

    def __post_init__(self) -> None:
        # each message names the field and its CLI option (analysis/commands.py)
        if not 1 <= self.max_attempts <= MAX_FIT_ATTEMPTS:
            raise ValueError(f"max_attempts (--max-attempts) must be in 1..{MAX_FIT_ATTEMPTS} "
                             f"got {self.max_attempts}")
        for name, option in (("q1_base", "--q1-base"), ("q2_base", "--q2-base")):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} ({option}) must be in (0, 1), "
                                 f"got {getattr(self, name)}")
        if not (math.isfinite(self.length) and 0 < self.length <= MAX_FIT_LENGTH):
            raise ValueError(f"length (--length) must be a number in (0, {MAX_FIT_LENGTH:g}] "
                             f"tokens, got {self.length}")
        for name, option, top in (("steps", "--steps", MAX_FIT_STEPS),
                                  ("max_nfev", "--max-nfev", MAX_FIT_NFEV)):
            if not 1 <= getattr(self, name) <= top:
                raise ValueError(f"{name} ({option}) must be in 1..{top}, "
                                 f"got {getattr(self, name)}")
        if not 1 <= self.starts <= MAX_FIT_STARTS:
            raise ValueError(f"starts (--starts) must be in 1..{MAX_FIT_STARTS}, "
                             f"got {self.starts}")
        if self.transfer not in TRANSFER_MODES:
            raise ValueError(f"transfer (--transfer) must be one of {TRANSFER_MODES}")
        if self.base not in BASE_MODES:
            raise ValueError(f"base (--base) must be one of {BASE_MODES}")
        if self.lr_mode not in LR_MODES:
            raise ValueError(f"lr_mode (--lr-mode) must be one of {LR_MODES}")
        if self.lr_mode in UNTRAINED_NO_REFLECTION_MODES and self.transfer == "per-regime":
            raise ValueError(f"lr_mode (--lr-mode) {self.lr_mode} needs transfer (--transfer) "
                             "shared or single: an untrained row has no length scale")
        object.__setattr__(self, "coupling", parse_coupling(self.coupling))
        self.optimiser_config(1.0)  # the update budget's own checks (DESIGN §2)
        if not 0 < self.max_adam_lr <= BOUNDS["adam_lr"][1]:  # NaN fails too
            raise ValueError(f"max_adam_lr (--max-adam-lr) must be in (0, "
                             f"{BOUNDS['adam_lr'][1]:g}], got {self.max_adam_lr}")
        if not 0 < self.beta <= BOUNDS["beta"][1]:  # NaN fails too
            raise ValueError(f"beta (--beta) must be in (0, {BOUNDS['beta'][1]:g}], "
                             f"got {self.beta}")
        if not 0 <= self.ft_share <= 1:
            raise ValueError(f"ft_share must be in [0, 1], got {self.ft_share}")
        if not 0 < self.acc_floor < 0.5:
            raise ValueError(f"acc_floor must be in (0, 0.5), got {self.acc_floor}")

    def optimiser_config(self, lr: float) -> OptimiserConfig:
        return OptimiserConfig(self.optimiser, lr, second_moment=self.second_moment,
                               max_grad_norm=self.max_grad_norm)

    @property
    def effective_steps(self) -> int:
        return min(self.steps, 10) if self.quick else self.steps

    @property
    def effective_nfev(self) -> int:
        return min(self.max_nfev, 6) if self.quick else self.max_nfev
