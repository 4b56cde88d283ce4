r"""Training-time terms and robust objectives (filled in as the modules land)."""

from captum_robust.robust.regularizers._base import EpsilonSchedule

__all__ = ["EpsilonSchedule"]
