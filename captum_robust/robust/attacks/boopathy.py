"""Old home of Boopathy et al.'s attacks, kept so existing imports work: AAI is now in ``aai.py``,
ISA in ``isa.py``."""

from captum_robust.robust.attacks.aai import AAI  # noqa: F401
from captum_robust.robust.attacks.isa import ISA  # noqa: F401

__all__ = ["AAI", "ISA"]
