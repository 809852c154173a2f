"""core package: what every other package uses (the bottom layer, docs/ARCHITECTURE.md).

twostage.py     Acc and Acc_K of the two-stage accuracy model (DESIGN §4)
calibration.py  per-trajectory counts and the calibration of (p, q1, q2) with CIs (DESIGN §4)
regimes.py      the one table of training regimes (DESIGN §2, §5, §6)
provenance.py   git commit, package versions, atomic writers, output-name checks
errors.py       the one CLI error style: expected failures as one `Error:` line
cli_options.py  click options built from a config dataclass's documented fields

core imports nothing from sim, analysis or realmodel (tests/test_layers.py).
"""
