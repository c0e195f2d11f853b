"""Non-negative integers from text that someone else wrote: query strings, headers, command-line
values, a remote's answers.

Contract: :func:`count` accepts 1 to 18 ASCII digits and nothing else, returning the integer, or
None for anything else. ``str.isdigit`` and ``int`` alone are not enough: ``"²".isdigit()`` is
true yet ``int("²")`` raises, ``int`` takes digits of every script (``"٣"`` is 3) and surrounding
blanks, and refuses more than 4300 digits with an exception. Callers turn None into their own
clear error (``400``, ``416``, a usage message); 18 digits (under 10**18) is more than any
size, offset or count this registry meets.
"""

from __future__ import annotations

import re

PATTERN = "[0-9]{1,18}"  # also for larger regular expressions
_DIGITS = re.compile(PATTERN)


def count(text: str | None) -> int | None:
    if text is None or not _DIGITS.fullmatch(text):
        return None
    return int(text)
