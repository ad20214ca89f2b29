"""YAML read from users (study files, `wno train --config`), with bounds a hostile or careless
file cannot get around.

`yaml.safe_load` already refuses to build arbitrary Python objects; it does not bound the work a
file can ask for. A "billion laughs" file nests aliases so that a few hundred bytes expand to
gigabytes once anything walks the data, deep nesting overflows the parser's recursion, and a huge
file is read whole. Here:

- aliases (``*name``) are refused: a study or config file has no use for them, and refusing them
  removes every expansion attack at its root (anchors alone are harmless and allowed);
- nesting deeper than `MAX_DEPTH` is refused before the parser's recursion runs out;
- a file larger than `MAX_BYTES` is refused before it is read.

Errors are `YamlError` (a `ValueError`) with the line and column of the offending place.

Example:
    >>> load_yaml("lr: 0.001\\nsizes: [tiny, small]")
    {'lr': 0.001, 'sizes': ['tiny', 'small']}
    >>> try:
    ...     load_yaml("a: &x [1, 2]\\nb: *x")
    ... except YamlError as e:
    ...     print(str(e)[:59])
    line 2, column 4: YAML aliases (*name) are not allowed here
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000  # a study file with every factor of every field is a few kilobytes
MAX_DEPTH = 32  # a study nests 4 levels (search.params.lr.low)


class YamlError(ValueError):
    """A YAML text that is malformed or exceeds a bound; the message says where."""


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that breaks a bound (an alias, too deep)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and nesting deeper than MAX_DEPTH while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(
                None, None, "YAML aliases (*name) are not allowed here: write the value out "
                "(a study or config file has no use for them, and they can expand without bound)",
                mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    None, None, f"nested deeper than {MAX_DEPTH} levels (a study file needs 4)",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of `path`, refusing files over MAX_BYTES before reading them.

    Raises FileNotFoundError for a missing file and YamlError for one that is too large, a
    directory, or not text.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as e:
        raise YamlError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    if path.is_dir():
        raise YamlError(f"{what} {str(path)!r} is a directory, not a file")
    if size > MAX_BYTES:
        raise YamlError(f"{what} {str(path)!r} is {size:,} bytes; a {what} may be at most "
                        f"{MAX_BYTES:,} bytes")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise YamlError(f"{what} {str(path)!r} is not UTF-8 text") from None


def compose(text: str):
    """The node tree of `text` (for line numbers), with the same bounds as `load_yaml`."""
    return _run(lambda: yaml.compose(text, Loader=_BoundedLoader), text)


def load_yaml(text: str) -> Any:
    """Parse `text` as YAML under the bounds above; raises YamlError with the place."""
    return _run(lambda: yaml.load(text, Loader=_BoundedLoader), text)  # noqa: S506 - SafeLoader


def _run(parse, text: str):
    if len(text) > MAX_BYTES:
        raise YamlError(f"the text is {len(text):,} characters; at most {MAX_BYTES:,} are allowed")
    try:
        return parse()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        kind = "" if isinstance(e, _Refused) else "not valid YAML: "
        raise YamlError(f"{where}{kind}{problem}") from None
    except RecursionError:  # a bound above should have caught it first; never a traceback
        raise YamlError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
