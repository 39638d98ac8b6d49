"""MkDocs hook: pages generated at build time from ntkcheck's own data.

* ``claims/``: one page per claim of :data:`ntkcheck.testing.claims.CLAIMS` — statement, seed
  reference, the property modules that check it (found by their ``claim`` mark), the tolerances
  they use (from :mod:`ntkcheck.testing.tolerances`), the worst measured quantity of the stored
  claims report and the mutants of :func:`ntkcheck.testing.mutants.catalogue` it killed (the
  mutation table of the stored claims report says which claim's property killed each one).
* ``reports/``: the Markdown reports and figures of ``reports/`` copied into the build.
* ``index.md``: ``<!-- readme:NAME -->`` markers replaced by code blocks of README.md.
* ``reference/``: one API reference page per topic of the facade.

The data and the rendering live in ``_ntkcheck_pages`` next to this file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from _ntkcheck_pages import (
    REPORT_TITLES,
    REPORTS,
    ROOT,
    _report_title,
    claim_page,
    claims_index,
    log,
    property_modules,
    reports_index,
    stored_report,
)
from mkdocs.structure.files import File, Files

# --------------------------------------------------------------------------- hooks

_state: dict[str, object] = {}


def _report_mds() -> list[Path]:
    return sorted(REPORTS.glob("*.md")) if REPORTS.is_dir() else []


def _nav_section(nav: list, title: str) -> list | None:
    for entry in nav:
        if isinstance(entry, dict) and title in entry and isinstance(entry[title], list):
            return entry[title]
    return None


def on_config(config):
    from ntkcheck.testing.claims import CLAIMS

    nav = config.nav or []
    claims_nav = _nav_section(nav, "Claims")
    if claims_nav is not None:
        claims_nav += [{key: f"claims/{key}.md"} for key in CLAIMS]
    reports_nav = _nav_section(nav, "Reports")
    if reports_nav is not None:
        for kind, title in REPORT_TITLES.items():
            group = [p for p in _report_mds() if p.stem.startswith(kind)]
            if group:
                reports_nav.append({title: [{_report_title(p): f"reports/{p.name}"} for p in group]})
    return config


def on_files(files: Files, config) -> Files:
    from ntkcheck.testing.claims import CLAIMS
    from ntkcheck.testing.mutants import catalogue
    from ntkcheck.testing.tolerances import TABLE

    modules = property_modules()
    report = stored_report(CLAIMS)
    mutants = catalogue()
    files.append(File.generated(config, "claims/index.md", content=claims_index(CLAIMS, modules, report, mutants)))
    for key, claim in CLAIMS.items():
        files.append(
            File.generated(config, f"claims/{key}.md", content=claim_page(key, claim, modules, TABLE, report, mutants))
        )
    _add_reference_pages(files, config)
    mds = _report_mds()
    files.append(File.generated(config, "reports/index.md", content=reports_index(mds)))
    for path in mds + sorted(REPORTS.glob("*.png")):
        files.append(File.generated(config, f"reports/{path.name}", abs_src_path=str(path)))
    return files


README_BLOCKS = {
    # marker name: (fence language, a string the block contains)
    "quickstart": ("bash", "tasks.py main"),
    "commands": ("bash", "ntkcheck verify --reproduce"),
    "library": ("python", "nk.analytic_ntk("),
    "plugin-example": ("python", "S.architectures("),
}


def readme_block(name: str) -> str:
    lang, needle = README_BLOCKS[name]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if match.group(1) == lang and needle in match.group(2):
            return f"```{lang}\n{match.group(2)}```"
    log.warning("README.md has no %s block containing %r (marker readme:%s)", lang, needle, name)
    return ""


def on_page_markdown(markdown: str, page, config, files) -> str:
    return re.sub(r"<!-- readme:([a-z-]+) -->", lambda m: readme_block(m.group(1)), markdown)


def on_serve(server, config, builder):
    for path in (REPORTS, ROOT / "README.md", ROOT / "ntkcheck"):
        if path.exists():
            server.watch(str(path))
    return server


# --------------------------------------------------------------------------- API reference pages

REFERENCE_TOPICS = {
    # page: (title, subpackage of the defining module, introduction)
    "models": (
        "Models",
        "ntkcheck.models",
        "Network families in NTK and standard parametrization, their layers, and the zero-output "
        "transforms of seed 000 (ASI, RND, the doubling trick).",
    ),
    "kernels": (
        "Kernels",
        "ntkcheck.kernels",
        "Exact empirical NTKs (layer rules, tiling, operators, distributed and out-of-core), analytic "
        "infinite-width NTK/NNGP kernels and their Monte Carlo estimates, spectral estimates.",
    ),
    "dynamics": (
        "Dynamics and solvers",
        "ntkcheck.dynamics",
        "Linearization, the losses of seed 000 §4, kernel solvers, gradient flows and descent, "
        "Gaussian-process inference and training of the network itself.",
    ),
}


def facade_sources() -> dict[str, str]:
    """Each public name of ``ntkcheck`` and the module it is defined in (its ``__module__``, else the
    module the facade imports it from)."""
    import ntkcheck

    tree = ast.parse(Path(ntkcheck.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    out = {}
    for name in ntkcheck.__all__:
        obj = getattr(ntkcheck, name)
        module = getattr(obj, "__module__", None)
        if not (isinstance(module, str) and module.startswith("ntkcheck")):
            module = imported.get(name, "ntkcheck")
        out[name] = module
    return out


def reference_page(topic: str, sources: dict[str, str]) -> str:
    title, package, intro = REFERENCE_TOPICS[topic]
    names = [n for n, m in sources.items() if m == package or m.startswith(package + ".")]
    order = {n: i for i, n in enumerate(sources)}
    names.sort(key=lambda n: (sources[n], order[n]))
    lines = [
        f"# {title}",
        "",
        intro,
        "",
        "Every name below is public in the `ntkcheck` namespace (`import ntkcheck as nk; nk.NAME`); "
        "where it is defined inside the package is not part of the API.",
        "",
    ]
    if not names:
        log.warning("no public name of ntkcheck is defined under %s", package)
    lines += [f"::: ntkcheck.{n}\n" for n in names]
    return "\n".join(lines)


def _add_reference_pages(files: Files, config) -> None:
    sources = facade_sources()
    covered = [
        n
        for n, m in sources.items()
        if any(m == p or m.startswith(p + ".") for _, p, _ in REFERENCE_TOPICS.values()) or m == "ntkcheck.errors"
    ]
    missing = sorted(set(sources) - set(covered))
    if missing:
        log.warning("public names of ntkcheck on no reference page: %s", ", ".join(missing))
    for topic in REFERENCE_TOPICS:
        files.append(File.generated(config, f"reference/{topic}.md", content=reference_page(topic, sources)))
