"""Old home of the classifier PGD, kept so existing imports work: now in ``pgd.py``."""

from captum_robust.robust.attacks.pgd import PGD  # noqa: F401

__all__ = ["PGD"]
