"""Old home of Levine et al.'s l2 top-k attack, kept so existing imports work: now in ``l2_topk.py``."""

from captum_robust.robust.attacks.l2_topk import L2TopKAttack  # noqa: F401

__all__ = ["L2TopKAttack"]
