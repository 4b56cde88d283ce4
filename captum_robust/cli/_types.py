"""Argument types of the command line, derived from :mod:`captum_robust._utils.validation`.

Each type parses the text, checks the value with the library's own checks (``check_int``,
``check_number``) against an :class:`~captum_robust._utils.validation.Interval`, and turns a
failure into :class:`argparse.ArgumentTypeError`, which argparse reports as
``argument --sigma: expected a positive number, got '0'`` with exit status 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional

from captum_robust._utils.validation import (
    FRACTION,
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    Interval,
    check_int,
    check_number,
)

__all__ = [
    "arg_type", "positive_int", "nonneg_int", "seed", "seconds", "positive_number", "nonneg_number",
    "fraction", "probability", "count_or_fraction", "mean_std", "NORMALIZE_PRESETS",
]

#: the integers >= 1 ("a positive integer")
COUNT = Interval(1, None, integer=True)
SEED = Interval(0, 2**32 - 1, integer=True)


def _expected(parse: Callable[[str], Any], interval: Interval) -> str:
    """What the type accepts, in the words of the error message: ``'a positive number'``,
    ``'an integer >= 0'``, ``'a number in (0, 1]'``."""
    noun = "integer" if parse is int else "number"
    if interval in (COUNT, POSITIVE):
        return f"a positive {noun}"
    article = "an" if noun == "integer" else "a"
    return f"{article} {noun} {interval.describe()}"


def _check(parse: Callable[[str], Any], interval: Interval, value: Any) -> None:
    if parse is int:
        check_int(value, "value", interval.low, interval.high)
    else:
        check_number(value, "value", interval)


def arg_type(
    parse: Callable[[str], Any] = float,
    interval: Interval = Interval(),
    *,
    expected: Optional[str] = None,
    otherwise: Optional[Callable[[str], Any]] = None,
) -> Callable[[str], Any]:
    """An argparse ``type=``: ``parse`` the text, then check the value against ``interval``.

    Args:
        parse: ``int`` or ``float`` (any callable raising ``ValueError`` on bad text).
        interval: the allowed values, checked with ``check_int`` (for ``int``) or
            ``check_number`` (finite numbers only).
        expected: the allowed values in words for the message ``expected <expected>, got
            '<text>'``; default from ``parse`` and ``interval`` (``'a positive integer'``,
            ``'a number >= 0'``).
        otherwise: another argument type tried when ``parse`` cannot read the text (e.g. a
            fraction where a count was expected); its failure is reported with ``expected``.

    Returns:
        A function ``str -> value`` raising :class:`argparse.ArgumentTypeError`.

    Example:
        >>> sigma = arg_type(float, POSITIVE)
        >>> sigma("0.5")
        0.5
        >>> sigma("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a positive number, got '0'
    """
    message = expected if expected is not None else _expected(parse, interval)

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            if otherwise is None:
                raise argparse.ArgumentTypeError(f"expected {message}, got {text!r}") from None
            try:
                return otherwise(text)
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"expected {message}, got {text!r}") from None
        try:
            _check(parse, interval, value)
        except ValueError:  # also InvalidParameterError
            raise argparse.ArgumentTypeError(f"expected {message}, got {text!r}") from None
        return value

    convert.__name__ = message.replace(" ", "_")  # argparse names the type in some messages
    return convert


positive_int = arg_type(int, COUNT)
nonneg_int = arg_type(int, Interval(0, None, integer=True))
seed = arg_type(int, SEED, expected="an integer in [0, 2**32 - 1]")
seconds = arg_type(float, POSITIVE, expected="a positive number of seconds")
positive_number = arg_type(float, POSITIVE)
nonneg_number = arg_type(float, NONNEGATIVE)
fraction = arg_type(float, FRACTION)
probability = arg_type(float, OPEN_UNIT)
#: ``"100"`` -> 100 (a count), ``"0.2"`` -> 0.2 (a fraction of the map size)
count_or_fraction = arg_type(
    int, COUNT, expected="a count >= 1 or a fraction in (0, 1)", otherwise=arg_type(float, OPEN_UNIT)
)


#: named per-channel statistics for ``--normalize``
NORMALIZE_PRESETS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def mean_std(text: str) -> Any:
    """``--normalize``: ``"M1,M2,M3:S1,S2,S3"`` (per-channel means, then standard deviations; one
    number each for grey-scale) or a preset name (``imagenet``) -> ``(means, stds)``.

    Example:
        >>> mean_std("0.5:0.25")
        ((0.5,), (0.25,))
        >>> mean_std("imagenet")[1]
        (0.229, 0.224, 0.225)
    """
    usage = ("MEAN:STD with comma-separated per-channel values, e.g. 0.485,0.456,0.406:0.229,0.224,0.225, or "
             f"{' or '.join(NORMALIZE_PRESETS)}")
    preset = NORMALIZE_PRESETS.get(text.strip().lower())
    if preset is not None:
        return preset
    mean_text, sep, std_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected {usage}, got {text!r}")
    try:
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {usage}, got {text!r}") from None
    if len(mean) != len(std):
        raise argparse.ArgumentTypeError(
            f"expected as many standard deviations as means (one per channel), got {len(mean)} and {len(std)} "
            f"in {text!r}")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise argparse.ArgumentTypeError(f"expected finite means and standard deviations > 0, got {text!r}")
    return mean, std
