"""Moved: Chen et al.'s :class:`IGNorm` and :class:`IGSumNorm` live in
:mod:`captum_robust.robust.regularizers.ig_norm`."""

from captum_robust.robust.regularizers.ig_norm import IGNorm, IGSumNorm  # noqa: F401
