"""Old home of AttributionPGD, kept so existing imports work: now in ``attribution_pgd.py``."""

from captum_robust.robust.attacks.attribution_pgd import AttributionPGD  # noqa: F401

__all__ = ["AttributionPGD"]
