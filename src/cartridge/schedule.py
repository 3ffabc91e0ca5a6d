"""Cron expressions as Kubeflow Pipelines reads them, checked before a recurring run
is created.

KFP parses schedules with robfig/cron's default parser: six fields, **seconds first**
(second minute hour day-of-month month day-of-week), or a descriptor such as `@daily`
or `@every 6h`. The day-of-week field is optional there, so a familiar five-field
crontab line is accepted and silently shifted: `0 */6 * * *` means "second 0 of every
sixth minute", not "every six hours". Five fields are refused here with the six-field
spelling to use instead.
"""

from __future__ import annotations

import re

# name, lowest, highest, names accepted for values
FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC").split()),
    ("day of week", 0, 6, ("SUN MON TUE WED THU FRI SAT").split()),
)
DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")  # Go's time.ParseDuration


class CronError(ValueError):
    """A schedule KFP would refuse, or read differently from what was meant."""


def check_cron(expression: str) -> str:
    """`expression`, stripped, if KFP reads it as written; CronError otherwise."""
    text = " ".join(expression.split())
    if not text:
        raise CronError("empty cron expression")
    if text.startswith("@"):
        return _check_descriptor(text)
    fields = text.split(" ")
    if len(fields) == 5:
        raise CronError(
            f"{text!r} has five fields; KFP's cron has six, seconds first: did you mean '0 {text}'?"
        )
    if len(fields) != 6:
        raise CronError(
            f"{text!r} has {len(fields)} fields; KFP's cron has six: "
            "second minute hour day-of-month month day-of-week"
        )
    for value, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        _check_field(value, name, low, high, names)
    return text


def _check_descriptor(text: str) -> str:
    if text in DESCRIPTORS:
        return text
    if text.startswith("@every "):
        duration = text.removeprefix("@every ").strip()
        if _DURATION.match(duration):
            return text
        raise CronError(f"bad duration in {text!r}: use Go's form, e.g. '@every 6h30m'")
    raise CronError(f"unknown schedule {text!r}: use one of {', '.join(DESCRIPTORS)} or '@every'")


def _check_field(value: str, name: str, low: int, high: int, names: tuple) -> None:
    for part in value.split(","):
        span, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise CronError(f"{name} {value!r}: the step after '/' must be a positive number")
        if span in ("*", "?"):
            if span == "?" and name not in ("day of month", "day of week"):
                raise CronError(f"{name} {value!r}: '?' only stands for a day")
            continue
        first, dash, last = span.partition("-")
        start = _number(first, name, value, low, high, names)
        if dash:
            end = _number(last, name, value, low, high, names)
            if end < start:
                raise CronError(f"{name} {value!r}: the range runs backwards")


def _number(token: str, name: str, value: str, low: int, high: int, names: tuple) -> int:
    if token.upper() in names:
        return names.index(token.upper()) + low
    if not token.isdigit():
        raise CronError(f"{name} {value!r}: {token!r} is not a number")
    number = int(token)
    if not low <= number <= high:
        raise CronError(f"{name} {value!r}: {number} is outside {low}-{high}")
    return number
