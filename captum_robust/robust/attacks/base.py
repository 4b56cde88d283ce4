"""Old home of the attacks' shared machinery, kept so existing imports work. The code now lives in
``_results.py`` (result dataclasses), ``_base.py`` (root class, model mode, passes), ``_adapter.py``
(attribution adapter, map preparation, measures), ``_loop.py`` (the step loop, best-iterate tracker),
``_map_attack.py`` (MapAttack, IterativeMapAttack) and ``captum_robust._utils`` (geometry, checks)."""

from captum_robust._utils.geometry import BoundType, Box, Tensors, check_inside_box, check_norm, clamp_box  # noqa: F401
from captum_robust._utils.geometry import detach_all, norm_of, per_example, project, where  # noqa: F401
from captum_robust._utils.geometry import random_in_ball, random_on_sphere, steepest_step  # noqa: F401
from captum_robust._utils.validation import check_bool, check_float_inputs, check_generator  # noqa: F401
from captum_robust._utils.validation import check_nonnegative as check_nonneg_float  # noqa: F401
from captum_robust._utils.validation import check_positive as check_pos_float  # noqa: F401
from captum_robust.robust.attacks._adapter import MEASURES, AttributionAdapter, submodule_like  # noqa: F401
from captum_robust.robust.attacks._adapter import apply_preparation, ghorbani_maps, make_measure  # noqa: F401
from captum_robust.robust.attacks._adapter import make_preparation  # noqa: F401
from captum_robust.robust.attacks._base import attack_mode, check_args, forward, index_args  # noqa: F401
from captum_robust.robust.attacks._base import input_gradients, predict, progress, unformat  # noqa: F401
from captum_robust.robust.attacks._base import warn_zero_gradient  # noqa: F401
from captum_robust.robust.attacks._loop import BestIterateTracker as BestTracker  # noqa: F401
from captum_robust.robust.attacks._map_attack import IterativeMapAttack, MapAttack, _Context  # noqa: F401
from captum_robust.robust.attacks._results import AttackResult, AttributionAttackResult, ISAResult  # noqa: F401
from captum_robust.robust.attacks._results import ObjectiveResult, PGDResult  # noqa: F401

__all__ = [
    "AttackResult",
    "AttributionAttackResult",
    "ObjectiveResult",
    "PGDResult",
    "ISAResult",
    "ghorbani_maps",
]
