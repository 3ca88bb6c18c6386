"""The one rule for the names fogline puts in paths, topics and user names.

A device id is an MQTT user name, a topic level and a folder name; a release
name is a TUF target path component and a folder name on every device. Both
follow :data:`NAME_PATTERN`, kept here once (like :mod:`fogline._files`, this
module sits above every package and imports nothing of fogline).

>>> check_name("cam-7", "device id")
'cam-7'
>>> check_name("digits/2", "release name")
Traceback (most recent call last):
...
ValueError: release name 'digits/2' must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit
"""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN", "check_name", "is_name"]

#: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def is_name(text: str) -> bool:
    """Whether ``text`` follows the rule."""
    return bool(_NAME.match(text))


def check_name(text: str, what: str) -> str:
    """Return ``text``, or raise ``ValueError`` naming ``what`` it is and what it may be."""
    if not is_name(text):
        raise ValueError(
            f"{what} {text!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return text
