"""Data and rendering for the MkDocs hook ntkcheck_docs: the property modules and their claim marks, the
stored claims report, and the Markdown of the claim pages, the claims index and the reports index.

The hook's folder is on sys.path while MkDocs imports the hook, so the hook imports this module by name.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.ntkcheck_docs")

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports"
CLAIMS_REPORT = REPORTS / "claims-cpu-float64.md"


# --------------------------------------------------------------------------- data


@dataclass
class Property:
    """One Hypothesis property (a test function) of a property module."""

    name: str
    doc: str


@dataclass
class PropertyModule:
    path: str  # relative to the repository root
    doc: str
    claims: set[str] = field(default_factory=set)
    properties: list[Property] = field(default_factory=list)
    tolerances: list[str] = field(default_factory=list)


def _str_arg(call: ast.AST) -> str | None:
    """The first string argument of ``pytest.mark.claim("key")`` / ``tolerance("name", ...)``."""
    if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant):
        value = call.args[0].value
        return value if isinstance(value, str) else None
    return None


def _call_name(node: ast.AST) -> str:
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _claim_of_mark(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The claim key of a ``pytest.mark.claim(...)`` expression (a literal or a module constant)."""
    if not (isinstance(node, ast.Call) and _call_name(node) == "claim" and node.args):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    return None


def property_modules() -> list[PropertyModule]:
    """Every ``test_*.py`` of ``ntkcheck.testing.properties``, read without importing it."""
    spec = importlib.util.find_spec("ntkcheck.testing.properties")
    if spec is None or not spec.submodule_search_locations:
        log.warning("ntkcheck.testing.properties not found: claim pages list no properties")
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = []
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        try:
            rel = path.resolve().relative_to(ROOT).as_posix()
        except ValueError:
            rel = f"ntkcheck/testing/properties/{path.name}"
        mod = PropertyModule(rel, ast.get_docstring(tree) or "")
        constants: dict[str, str] = {}
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        constants[target.id] = node.value.value
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            ):
                marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
                mod.claims.update(c for c in (_claim_of_mark(m, constants) for m in marks) if c)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                mod.properties.append(Property(node.name, ast.get_docstring(node) or ""))
                mod.claims.update(c for c in (_claim_of_mark(d, constants) for d in node.decorator_list) if c)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) == "tolerance":
                name = _str_arg(node)
                if name and name not in mod.tolerances:
                    mod.tolerances.append(name)
        found.append(mod)
    return found


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` is an escaped bar inside a cell)."""
    body = row.strip().strip("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


@dataclass
class StoredReport:
    """What the stored claims report measured: per claim its row, and the mutation table."""

    header: str = ""
    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    mutants: dict[str, dict[str, str]] = field(default_factory=dict)
    mutation_summary: str = ""


def stored_report(claims: dict) -> StoredReport:
    """Parse the claims report (its claim table and its mutation table), keyed by claim and mutant name."""
    out = StoredReport()
    if not CLAIMS_REPORT.exists():
        log.warning("%s not found: claim pages show no measurements or mutants", CLAIMS_REPORT)
        return out
    by_statement = {c.statement.replace("|", "\\|"): key for key, c in claims.items()}
    lines = CLAIMS_REPORT.read_text(encoding="utf-8").splitlines()
    header: list[str] | None = None
    section = ""
    for i, line in enumerate(lines):
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if i > 0 and not out.header and line.strip() and not line.startswith(("#", "|")):
            out.header = line.strip()
        if section == "Mutation score" and line.strip() and not line.startswith("|") and not out.mutation_summary:
            out.mutation_summary = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        if section == "" and "claim" in row:
            key = by_statement.get(row["claim"])
            if key is None:
                log.info("claims report row matches no current claim statement: %.60s", row["claim"])
            else:
                out.rows[key] = row
        elif section == "Mutation score" and "mutant" in row:
            out.mutants[row["mutant"].strip("`")] = row
    return out


# --------------------------------------------------------------------------- rendering


def md_text(text: str) -> str:
    """A reST-flavoured docstring as Markdown: ``code`` -> `code`, :role:`x` -> `x`, stray * and < escaped."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)
    out = []
    for line in text.splitlines():
        if line.startswith("    "):  # an indented block stays verbatim (a formula)
            out.append(line)
            continue
        parts = re.split(r"(`[^`]*`)", line)
        for j, part in enumerate(parts):
            if j % 2 == 0:
                bullet = j == 0 and re.match(r"^(\s*)\* ", part)
                start = bullet.end() if bullet else 0
                part = part[:start] + part[start:].replace("*", r"\*").replace("_", r"\_").replace("<", "&lt;")
                parts[j] = part
        out.append("".join(parts))
    return "\n".join(out)


def md_cell(text: str) -> str:
    return md_text(text).replace("\n", " ").replace("|", "\\|")


def claim_page(key, claim, modules, tolerances, report: StoredReport, catalogue) -> str:
    mine = [m for m in modules if key in m.claims]
    row = report.rows.get(key, {})
    lines = [
        f"# `{key}`",
        "",
        f'Claim `{key}` of `ntkcheck.testing.claims.CLAIMS`; its properties carry `@pytest.mark.claim("{key}")`.',
        "",
        "## Statement",
        "",
        md_text(claim.statement),
        "",
        "## Seed reference",
        "",
        md_text(claim.reference),
        "",
        "See [the seed documents](../seeds.md) for the papers these references point into.",
        "",
        "## How it is checked",
        "",
    ]
    if not mine:
        lines += ["No property module carries this claim's mark.", ""]
    for mod in mine:
        lines += [f"### `{mod.path}`", "", md_text(mod.doc), ""]
        for prop in mod.properties:
            lines += [f"**`{prop.name}`**", ""]
            lines += [md_text(prop.doc) if prop.doc else "(no docstring)", ""]
    names = [t for m in mine for t in m.tolerances]
    stored_tol = re.search(r"`([a-z0-9_]+)`", row.get("its tolerance", ""))
    if stored_tol and stored_tol.group(1) not in names:
        names.append(stored_tol.group(1))
    names = list(dict.fromkeys(names))
    lines += ["### Tolerances", ""]
    if names:
        lines += [
            "Every check compares its measured quantity with an entry of the tolerance table "
            "(`ntkcheck.testing.tolerances.TABLE`), which states the entry's reason.",
            "",
            "| tolerance | float64 | float32 | reason |",
            "|---|---|---|---|",
        ]
        for name in names:
            tol = tolerances.get(name)
            if tol is None:
                lines.append(f"| `{name}` | | | (not in the current table) |")
            else:
                lines.append(f"| `{name}` | {tol.float64:.3g} | {tol.float32:.3g} | {md_cell(tol.reason)} |")
        lines.append("")
    else:
        lines += ["The properties of this claim name no tolerance directly.", ""]
    lines += ["## Last stored measurement", ""]
    if row:
        lines += [
            f"From the [claims report](../reports/claims-cpu-float64.md) ({md_text(report.header.split('.')[0])}):",
            "",
            "| | |",
            "|---|---|",
        ]
        for col in ("examples run", "discarded", "checks", "worst error: the quantity", "its tolerance", "verdict"):
            if col in row:
                lines.append(f"| {col} | {row[col]} |")
        lines.append("")
    else:
        lines += ["The stored claims report has no row for this claim.", ""]
    killed = [(name, r) for name, r in report.mutants.items() if r.get("claim", "").strip("`") == key]
    lines += ["## Mutants it kills", ""]
    if killed:
        lines += [
            "Plausible bugs of the catalogue (`ntkcheck.testing.mutants.catalogue()`) whose first failing "
            "property in the stored mutation run (`ntkcheck verify --mutants`) belongs to this claim. "
            "Each mutant is counted once, by the first property that failed under it.",
            "",
            "| mutant | replaces | the plausible bug | killed by |",
            "|---|---|---|---|",
        ]
        for name, r in killed:
            mutant = catalogue.get(name)
            target = f"`{mutant.target}`" if mutant else "(no longer in the catalogue)"
            desc = md_cell(mutant.description) if mutant else r.get("the plausible bug", "")
            lines.append(f"| `{name}` | {target} | {desc} | {r.get('killed by', '')} |")
        lines.append("")
    else:
        lines += [
            "No mutant of the stored mutation run was first killed by this claim's properties "
            "(a mutant is credited to the first property that fails under it; the properties of this "
            "claim may catch others too).",
            "",
        ]
    return "\n".join(lines)


def claims_index(claims, modules, report: StoredReport, catalogue) -> str:
    lines = [
        "# Claims",
        "",
        "Each claim of the seed papers is a `Claim(key, statement, reference)` of "
        "`ntkcheck.testing.claims.CLAIMS`, checked by the Hypothesis properties of "
        "`ntkcheck/testing/properties/` that carry its mark. These pages are generated when the site is built "
        "from the claims, the property modules, the tolerance table, the mutant catalogue and the stored "
        "[claims report](../reports/claims-cpu-float64.md).",
        "",
    ]
    if report.mutation_summary:
        lines += [f"Mutation score of the stored run: {md_text(report.mutation_summary)}", ""]
    lines += ["| claim | reference | property modules | verdict | mutants killed |", "|---|---|---|---|---|"]
    for key, claim in claims.items():
        mods = ", ".join(f"`{Path(m.path).name}`" for m in modules if key in m.claims) or "-"
        verdict = report.rows.get(key, {}).get("verdict", "-")
        n = sum(1 for r in report.mutants.values() if r.get("claim", "").strip("`") == key)
        lines.append(f"| [`{key}`]({key}.md) | {md_cell(claim.reference)} | {mods} | {verdict} | {n} |")
    lines.append("")
    unassigned = [n for n in catalogue if n not in report.mutants]
    if unassigned:
        lines += [
            "Mutants of the current catalogue not in the stored mutation run (rerun "
            "`ntkcheck verify --mutants` to place them): " + ", ".join(f"`{n}`" for n in unassigned),
            "",
        ]
    return "\n".join(lines)


REPORT_TITLES = {"claims": "Claims report", "bench": "Benchmarks", "reproduce": "Reproductions"}


def _report_title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def reports_index(mds: list[Path]) -> str:
    lines = [
        "# Reports",
        "",
        "What the `ntkcheck` command wrote into `reports/`, copied into this site when it is built: the "
        "claims report of `ntkcheck verify`, the benchmark reports of `ntkcheck report` and the "
        "reproductions of `ntkcheck reproduce`.",
        "",
    ]
    for kind, title in REPORT_TITLES.items():
        group = [p for p in mds if p.stem.startswith(kind)]
        if group:
            lines += [f"## {title}", ""]
            lines += [f"* [{_report_title(p)}]({p.name})" for p in group]
            lines.append("")
    return "\n".join(lines)
