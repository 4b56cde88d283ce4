"""Moved: :class:`InputGradientRegularizer` lives in :mod:`captum_robust.robust.regularizers.input_gradient`."""

from captum_robust.robust.regularizers.input_gradient import InputGradientRegularizer  # noqa: F401
