"""Griffe extension: render the reST roles of ntkcheck's Google-style docstrings as Markdown.

``:func:`~ntkcheck.testing.claims.check_close``` becomes an optional cross-reference (a link where
the target is documented on this site, plain code otherwise), ````code```` becomes `code`.
Short targets (``:class:`Recorder```) are looked up relative to the docstring's module.
A list of parameter names wrapped over two lines before its colon (``a, b,`` / ``c: ...``) is
joined into one line, and a continuation line written at the items' own indentation is indented,
as the Google-style parser needs.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):`(~?)([^`<]+?)(?:\s*<([^`>]+)>)?`")
LITERAL = re.compile(r"``(.+?)``", re.S)
# "a, b, c,\n    d: description" in an Args section: a list of names wrapped before its colon.
WRAPPED_NAMES = re.compile(r"^([ \t]+)((?:\w+, )*\w+,)[ \t]*\n\1(?=(?:\w+, )*\w+:)", re.M)


SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Attributes):\s*$"
)
ITEM = re.compile(r"^\s*\*{0,2}[\w.]+(, \*{0,2}[\w.]+)*( \([^)]*\))?:(\s|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fix_sections(text: str) -> str:
    """In a parameter section, indent a continuation line written at the items' own indentation."""
    lines = text.splitlines()
    out, section, item_indent = [], None, None
    for line in lines:
        if line.strip():
            if section is not None and _indent(line) <= section:
                section, item_indent = None, None
            elif section is not None:
                if item_indent is None:
                    item_indent = _indent(line)
                elif _indent(line) == item_indent and not ITEM.match(line):
                    line = "    " + line
            match = SECTION.match(line)
            if match:
                section, item_indent = len(match.group(1)), None
        out.append(line)
    return "\n".join(out)


def _module_path(obj: Object) -> str:
    return obj.module.path if obj.is_module or obj.parent is not None else obj.path


def _convert(text: str, obj: Object) -> str:
    def role(match: re.Match) -> str:
        tilde, target, explicit = match.group(1), match.group(2).strip(), match.group(3)
        title = target
        if explicit:
            title, target = target, explicit.strip()
        target = target.rstrip("()")
        if tilde:
            title = target.rsplit(".", 1)[-1]
        if target.startswith("."):
            target = _module_path(obj) + target
        elif "." not in target or not target.startswith("ntkcheck"):
            if not target.startswith(("torch", "numpy", "scipy", "hypothesis", "pytest")):
                target = f"{_module_path(obj)}.{target}"
        return f'<autoref identifier="{html.escape(target)}" optional><code>{html.escape(title)}</code></autoref>'

    text = _fix_sections(WRAPPED_NAMES.sub(r"\1\2 ", text))
    return LITERAL.sub(r"`\1`", ROLE.sub(role, text))


class RstRoles(Extension):
    """Rewrite reST roles and double-backtick literals before the docstrings are parsed."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None and obj.docstring.value:
            obj.docstring.value = _convert(obj.docstring.value, obj)
