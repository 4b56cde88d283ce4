"""Moved: Boopathy et al.'s Int, Int2 and IntOneClass live in
:mod:`captum_robust.robust.regularizers.int_family`, IntAdv and Int2Adv in
:mod:`captum_robust.robust.regularizers.int_adversarial`."""

from captum_robust.robust.regularizers.int_adversarial import Int2Adv, IntAdv  # noqa: F401
from captum_robust.robust.regularizers.int_family import TUNED_GAMMA, Int, Int2, IntOneClass  # noqa: F401
