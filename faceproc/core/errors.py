"""Exceptions turned into the one-line reasons that rejects, results and the console show."""

from __future__ import annotations

import re

MAX_REASON = 300  # characters of a reason kept in result.json and the accuracy table

_EXC_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's message (or of a text); "" when there is none."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else ""


def message_or_type(exc: BaseException) -> str:
    """The first line of the message, or the type's name when the message is empty: what follows
    a sentence's colon."""
    return first_line(exc) or type(exc).__name__


def describe(exc: BaseException) -> str:
    """"Type: first line of the message", or just the type when the message is empty."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _is_ray(exc_or_name: BaseException | str) -> bool:
    name = exc_or_name if isinstance(exc_or_name, str) else type(exc_or_name).__module__ + "."
    return name.startswith("ray.")


def one_line_reason(exc: BaseException) -> str:
    """A one-line "Type: message" for an exception, digging the user's error out of Ray's wrappers.

    The deepest non-Ray exception of the cause chain wins; when Ray only hands back its own
    wrappers (an actor that died in `__init__`), the last "SomeError: message" line of the remote
    traceback they carry is used. faceproc's own errors are full sentences and keep no type name.
    """
    chain, seen = [exc], {id(exc)}
    while True:
        cause = getattr(chain[-1], "cause", None)
        nxt = cause if isinstance(cause, BaseException) else chain[-1].__cause__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
    ours = [e for e in chain if not _is_ray(e)]
    last = ours[-1] if ours else chain[-1]
    name, message = f"{type(last).__module__}.{type(last).__name__}", first_line(last)
    if not ours:
        found = None
        for wrapper in chain:
            for line in _ANSI.sub("", str(wrapper)).splitlines():
                match = _EXC_LINE.match(line)
                if match and not (found and _is_ray(match.group(1)) and not _is_ray(found[0])):
                    found = (match.group(1), (match.group(2) or "").strip())
        if found:
            name, message = found
    if name.startswith("faceproc.") and message:
        return truncate(message)
    name = name.rsplit(".", 1)[-1]
    return truncate(f"{name}: {message}" if message else name)


def truncate(reason: str, limit: int = MAX_REASON) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
