"""Reports from one scan result (the report.json document): Markdown, JUnit XML and one
self-contained HTML page (inline SVG plots and PNG thumbnails, no scripts, no network).

Every renderer reads only the JSON document, so `madaudit report report.json --format html`
re-renders exactly what the scan wrote without recomputing anything.
"""

from __future__ import annotations

import html
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.forecast_story import band_cell, horizon_sentence, summary_lines
from audit.stages import skipped_lines
from audit.io.atomic import write_text_atomic
from audit.plots import forecast_svg, map_svg, rates_svg

FORMATS = ("json", "md", "html", "junit")
FILENAMES = {"json": "report.json", "md": "report.md", "html": "report.html", "junit": "junit.xml"}
FORECAST_PANELS = ("recall", "tail_coverage", "precision", "fd_model")
_STATUS_MARK = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}


def write_reports(data: dict[str, Any], out: str | Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Write the requested reports into `out`, each atomically (a full disk or a kill leaves the
    old file or none, never half of one); returns format -> path. Appends the Markdown to
    $GITHUB_STEP_SUMMARY when that is set (GitHub Actions shows it on the run's page); a summary
    file that cannot be written is a warning, not a failed run."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renderers = {"json": lambda d: json.dumps(d, indent=2, allow_nan=False) + "\n", "md": render_markdown,
                 "html": render_html, "junit": render_junit}
    written = {}
    for fmt in formats:
        written[fmt] = write_text_atomic(out / FILENAMES[fmt], renderers[fmt](data))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and "md" in formats:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(render_markdown(data) + "\n")
        except OSError as exc:
            warnings.warn(f"GITHUB_STEP_SUMMARY {summary} cannot be written ({exc.strerror or exc}); "
                          "the reports are in " + str(out), stacklevel=2)
    return written


# ---------------------------------------------------------------------------------------------
# Escaping: every string in a report may come from a file name or a tampered report.json

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_XML_FORBIDDEN = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~!])")


def _visible(text: Any) -> str:
    """Control characters (newlines included) shown as escapes, so no field can start a line."""
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m.group(), f"\\x{ord(m.group()):02x}"
                                                                             if ord(m.group()) < 256 else
                                                                             f"\\u{ord(m.group()):04x}"), str(text))


def _h(text: Any) -> str:
    """HTML text or attribute value: escaped (quotes too), control characters shown."""
    return html.escape(_visible(text), quote=True)


def _md(text: Any) -> str:
    """Markdown inline text: every markup character escaped, control characters shown."""
    return _MD_SPECIAL.sub(r"\\\1", _visible(text))


def _xml(text: Any) -> str:
    """XML 1.0 text: characters it forbids replaced (ElementTree escapes the rest)."""
    return _XML_FORBIDDEN.sub("\ufffd", str(text))


def _token(value: Any, allowed: tuple[str, ...]) -> str:
    """A value used as a CSS class or label: one of `allowed`, else 'unknown'."""
    return value if value in allowed else "unknown"


_THUMBNAIL = re.compile(r"data:image/png;base64,[A-Za-z0-9+/]*={0,2}")


# ---------------------------------------------------------------------------------------------
# Text


def _band_text(m: dict[str, list[float]], t: int) -> str:
    return band_cell(m, t, lambda v: _fmt(v, 3))


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _ci(m: dict[str, Any]) -> str:
    return f"[{_fmt(m['ci'][0])}, {_fmt(m['ci'][1])}]" if m.get("ci") else ""


def _estimate_text(e: dict[str, Any]) -> str:
    if e["value"] is None:
        return "n/a" if str(e.get("method", "")).startswith("not available") else "not identifiable"
    if e.get("lower") is not None and e.get("upper") is not None:
        return f"{e['value']:.3f} [{e['lower']:.3f}, {e['upper']:.3f}]"
    if e.get("lower") is not None:
        return f"{e['value']:.3f} (at least {e['lower']:.3f})"
    return f"{e['value']:.3f}"


def verdict_line(data: dict[str, Any]) -> str:
    gates = data["gates"]
    counts = {s: sum(g["status"] == s for g in gates) for s in ("pass", "warn", "fail")}
    return (f"madaudit verdict: {_token(data['verdict'], ('pass', 'warn', 'fail')).upper()} ({counts['fail']} failed, {counts['warn']} warnings, "
            f"{counts['pass']} passed of {len(gates)} gates)")


def verdict_table(data: dict[str, Any], style: Callable[[str, str], str] = lambda text, status: text,
                  width: int | None = None) -> str:
    """The short table `madaudit scan` prints, then the reasons that are otherwise only in the files:
    the synthetic-share estimate used, every estimate warning, the near-duplicate rule and the
    skipped files by reason. `style(text, status)` may colour a status cell (after padding)."""
    rows = [(g["status"].upper() + (" (unknown)" if g.get("unknown") else ""), g["metric"], _fmt(g["value"]),
             f"{'>=' if g['comparator'] == 'min' else '<='} {g['threshold']:g}", g["severity"]) for g in data["gates"]]
    header = ("status", "gate", "value", "threshold", "severity")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row, status=None):
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        if status is not None:
            cells[0] = style(cells[0], status)
        return "  ".join(cells).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(r, g["status"]) for r, g in zip(rows, data["gates"])]
    table_lines = len(lines)
    lines += skipped_lines(data.get("stages"))  # which stages these sets could not carry, and why
    sf = data["synthetic_fraction"]
    primary = sf["estimates"].get(sf["primary"])
    if primary is not None:
        lines.append(f"synthetic share ({_visible(sf['primary'])}): {_estimate_text(primary)}, {_visible(primary['method'])}")
    reads = sf.get("gate_reads")
    if reads and reads["read"] != "none":
        lines.append(f"synthetic-share gates read {_visible(reads['read'])} (lower bound: "
                     f"{_visible(reads.get('lower_read') or reads['read'])}): {_visible(reads['why'])}")
    lines += [f"warning: {_visible(w)}" for w in sf["warnings"]]  # reasons, not only in the files
    lines += [f"note: {_visible(n)}" for n in sf.get("notes", [])]
    nd = data.get("near_duplicates") or {}
    if nd.get("description"):
        lines.append(f"near duplicates: {_visible(nd['description'])}")
    if data.get("items"):
        lines.append(f"per item: {items_sentence(data)}")
    for side in ("reference", "candidate"):
        by_reason = data["inputs"][side]["skipped_by_reason"]
        if by_reason:
            lines.append(f"skipped in the {side}: " + ", ".join(f"{_visible(r)} x {n}" for r, n in sorted(by_reason.items())))
    if width:  # the reasons below the table wrap to the terminal's width
        import textwrap

        lines[table_lines:] = [textwrap.fill(text, width=max(40, width), subsequent_indent="  ")
                               for text in lines[table_lines:]]
    return verdict_line(data) + "\n" + "\n".join(lines)


def items_sentence(data: dict[str, Any]) -> str:
    """One line on the per-item pass: how many items, what it would drop, how exact the search was."""
    items = data["items"]
    counts, rules = items["counts"], items["rules"]
    flags = ", ".join(f"{name} {counts[name]:,}" for name in ("synthetic", "copy", "duplicate", "outside"))
    search = []
    for side, index in items["index"].items():
        recall = index["recall"]
        search.append(f"{side} {'exact' if index['kind'] == 'exact' else 'IVF'}"
                      + ("" if index["kind"] == "exact" else f" (recall@{recall['k']} {recall['value']:.3f})"))
    return (f"{items['items']:,} candidate items scored into {_visible(items['path'])}: keep {counts['keep']:,} "
            f"(dropping {', '.join(_visible(r) for r in rules['drop']) or 'nothing'}; flagged {flags}); "
            f"search: {', '.join(search)}")


def render_markdown(data: dict[str, Any]) -> str:
    """GitHub Markdown; every string from the data escaped (a file name cannot add a heading)."""
    inputs, sf, fc = data["inputs"], data["synthetic_fraction"], data["forecast"]
    verdict = _token(data["verdict"], ("pass", "warn", "fail")).upper()
    lines = [f"## madaudit: {verdict}", "",
             f"Candidate {_md(inputs['candidate']['path'])} ({_md(inputs['candidate']['items'])} items) against "
             f"reference {_md(inputs['reference']['path'])} ({_md(inputs['reference']['items'])} items); "
             f"model {_md(_model_name(data))}.", ""]
    lines += [f"- {_md(line)}" for line in summary_findings(data)]
    lines += [f"- {_md(line)}" for line in skipped_lines(data.get("stages"))]
    lines += ["", "| gate | value | threshold | severity | status |", "|---|---|---|---|---|"]
    for g in data["gates"]:
        lines.append(f"| {_md(g['metric'])} | {_md(_fmt(g['value']))} | {'≥' if g['comparator'] == 'min' else '≤'} "
                     f"{_md(_fmt(g['threshold']))} | {_md(g['severity'])} | "
                     f"{_STATUS_MARK.get(g['status'], _md(g['status']))} |")
    lines += ["", "### Synthetic share", "", "| estimate | value | method |", "|---|---|---|"]
    for name, e in sf["estimates"].items():
        lines.append(f"| {_md(name)} | {_md(_estimate_text(e))} | {_md(e['method'])} |")
    lines += [f"- {_md(w)}" for w in sf["warnings"]]
    lines += [f"- note: {_md(n)}" for n in sf.get("notes", [])]
    lines += ["", "### Metrics", "", "| metric | value | 95% interval | method |", "|---|---|---|---|"]
    for name, m in data["metrics"].items():
        lines.append(f"| {_md(name)} | {_md(_fmt(m['value']))} | {_md(_ci(m))} | {_md(m['method'])} |")
    lines += ["", "### Forecast", "", f"Loop {_md(fc['loop'])}, stand-in {_md(fc['model'])}.", ""]
    lines += [f"- {_md(line)}" for line in summary_lines(fc)]
    if fc["available"]:
        lines += ["", "| generation | " + " | ".join(f"{n} / real-only" for n in FORECAST_PANELS[:3])
                  + " | fd_model |", "|---|---|---|---|---|"]
        for t in fc["generations"]:
            cells = [_band_text(fc["relative"][n], t) for n in FORECAST_PANELS[:3]] + [_band_text(fc["metrics"]["fd_model"], t)]
            lines.append(f"| {_md(t)} | " + " | ".join(_md(c) for c in cells) + " |")
    unreadable = inputs["reference"]["unreadable"] + inputs["candidate"]["unreadable"]
    if unreadable:
        lines += ["", f"{_md(unreadable)} files could not be read (listed in report.json, by reason)."]
    if data.get("items"):
        lines += ["", "### Per item", "", _md(items_sentence(data)) + ". `madaudit filter` writes the keys to keep."]
    nd = data["near_duplicates"]
    lines += ["", "### Near duplicates", "", f"Rule: {_md(nd.get('description') or nd['rule'])}. "
              f"{_md(len(nd['copies_of_reference']))} copies of reference items, {_md(len(nd['within_candidate']))} "
              "near duplicates within the candidate."]
    lines += [f"- {_md(p['candidate'])} ~ {_md(p['match'])} ({_md(p['kind'])}, distance {_md(_fmt(p['distance']))})"
              for p in data.get("duplicate_pairs", [])[:10]]
    if data["gallery"]:
        lines += ["", "### Most suspicious candidate items", ""]
        lines += [f"- {_md(item['key'])}" for item in data["gallery"][:10]]
    if data.get("unexplained"):
        lines += ["", "### Unlike both the reference and the detector's synthetic examples", ""]
        lines += [f"- {_md(item['key'])}" for item in data["unexplained"][:10]]
    return "\n".join(lines) + "\n"


def render_junit(data: dict[str, Any]) -> str:
    """One test case per gate; a failed gate is a <failure> whose text is the message, a warning
    passes with the message in <system-out>. Characters XML 1.0 forbids are replaced."""
    gates = data["gates"]
    suite = ET.Element("testsuite", name="madaudit", tests=str(len(gates)),
                       failures=str(sum(g["status"] == "fail" for g in gates)), errors="0", skipped="0",
                       timestamp=_xml(data["created"]), time=_xml(data["seconds"]))
    for g in gates:
        case = ET.SubElement(suite, "testcase", classname="madaudit.gates", name=_xml(g["metric"]), time="0")
        if g["status"] == "fail":
            failure = ET.SubElement(case, "failure", message=_xml(g["message"]), type="GateFailed")
            failure.text = _xml(g["message"])
        else:
            ET.SubElement(case, "system-out").text = _xml(f"{g['status'].upper()}: {g['message']}")
    sf = data.get("synthetic_fraction", {})
    notes = (skipped_lines(data.get("stages")) + [f"warning: {w}" for w in sf.get("warnings", [])]
             + [f"note: {n}" for n in sf.get("notes", [])])
    if notes:  # skipped stages and estimate warnings reach CI logs too, not only the report files
        ET.SubElement(suite, "system-out").text = _xml("\n".join(notes))
    root = ET.Element("testsuites", name="madaudit", tests=suite.get("tests"), failures=suite.get("failures"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _model_name(data: dict[str, Any]) -> str:
    from audit.io.sides import identity_name

    model = data.get("model")
    name = identity_name(model)
    if name is None:
        return "unknown (bare embeddings without --embedding-model)"
    return f"{name} (declared)" if isinstance(model, dict) and model.get("declared") else name


# ---------------------------------------------------------------------------------------------
# HTML with inline SVG

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:16px;color:#1d232a}
h1{font-size:22px;margin:8px 0} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde}
table{border-collapse:collapse;width:100%} td,th{border-bottom:1px solid #eef;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f6fa} .num{text-align:right;font-variant-numeric:tabular-nums}
#verdict{padding:14px 18px;border-radius:8px;font-size:20px;font-weight:600}
.verdict-pass{background:#e3f6e8;color:#17602f} .verdict-warn{background:#fff4d6;color:#7a5400} .verdict-fail{background:#fde4e4;color:#8e1b1b}
.status-pass{color:#17602f} .status-warn{color:#7a5400} .status-fail{color:#8e1b1b;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:12px} .warning{background:#fff8e6;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
#gallery,#unexplained{display:flex;flex-wrap:wrap;gap:10px} figure.suspicious{margin:0;width:140px;font-size:11px}
.key{overflow-wrap:anywhere} nav ul{display:flex;flex-wrap:wrap;gap:4px 14px;list-style:none;padding:0;margin:8px 0}
#summary li{margin:3px 0} .table-wrap{overflow-x:auto} svg.plot{max-width:100%;height:auto}
figure.suspicious img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccd;background:#fff}
#duplicate-pairs{display:flex;flex-wrap:wrap;gap:12px} figure.pair{margin:0;width:210px;font-size:11px;overflow-wrap:anywhere}
figure.pair img,figure.pair div{display:inline-block;width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccd;background:#fff;margin-right:4px}
.muted{color:#667}
@media (max-width:600px){body{padding:8px} .msg{display:none} td,th{padding:3px 4px}}
"""


def render_html(data: dict[str, Any]) -> str:
    """One self-contained page from `templates/report.html` (Jinja2, autoescaped; `v` also drops
    control characters): no scripts, no network, plots as inline SVG."""
    from markupsafe import Markup

    inputs, sf, fc = data["inputs"], data["synthetic_fraction"], data["forecast"]
    statuses = ("pass", "warn", "fail")
    context = {
        "css": Markup(_CSS),
        "verdict": _token(data["verdict"], statuses),
        "verdict_line": verdict_line(data),
        "summary": summary_findings(data),
        "skipped_stages": skipped_lines(data.get("stages")),
        "sections": _SECTIONS,
        "inputs": inputs,
        "model_name": _model_name(data),
        "created": data["created"],
        "version": data["madaudit_version"],
        "gates": [{"metric": g["metric"], "value": _fmt(g["value"]), "severity": g["severity"], "message": g["message"],
                   "threshold": f"{'≥' if g['comparator'] == 'min' else '≤'} {_fmt(g['threshold'])}",
                   "status": _token(g["status"], statuses)} for g in data["gates"]],
        "estimates": [(name, _estimate_text(x), x["method"]) for name, x in sf["estimates"].items()],
        "warnings": sf["warnings"] + [f"note: {n}" for n in sf.get("notes", [])],
        "metrics": [{"name": n, "value": _fmt(m["value"]), "ci": _ci(m), "method": m["method"], "params": _params(m)}
                    for n, m in data["metrics"].items()],
        # matplotlib writes the SVG and escapes the text in it; only our own labels go in.
        "rates_plot": Markup(rates_svg(data)),
        "map_plot": Markup(map_svg(data["map"])),
        "map_method": data["map"]["method"],
        "horizon": horizon_sentence(fc),
        "forecast_lines": summary_lines(fc)[1:],
        "forecast_plots": [Markup(forecast_svg(fc, name)) for name in FORECAST_PANELS] if fc["available"] else [],
        "gallery": _gallery_context(data["gallery"]),
        "unexplained": _gallery_context(data.get("unexplained") or []),
        "duplicates": _duplicates_context(data),
        "items_line": items_sentence(data) if data.get("items") else None,
        "skipped_counts": [(side, reason, n) for side in ("reference", "candidate")
                           for reason, n in inputs[side]["skipped_by_reason"].items()],
        "skipped_files": [(side, s) for side in ("reference", "candidate") for s in inputs[side]["skipped"]],
    }
    return _template("report.html").render(**context)


def _gallery_context(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"key": item["key"], "thumbnail": _safe_thumbnail(item.get("thumbnail")),
             "scores": [(k.replace("_", " "), f"{v:.3f}") for k, v in item.items()
                        if isinstance(v, float) and k != "key"]} for item in items]


def _template(name: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("audit", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["v"] = _visible
    return env.get_template(name)


def _safe_thumbnail(uri: Any) -> str | None:
    """Only a PNG data URI is ever put in an img src."""
    return uri if isinstance(uri, str) and _THUMBNAIL.fullmatch(uri) else None


_SECTIONS = [("gates-section", "Gates"), ("synthetic-share-section", "Synthetic share"),
             ("metrics-section", "Metrics"), ("map-section", "Map"), ("forecast-section", "Forecast"),
             ("gallery-section", "Suspicious items"), ("duplicates-section", "Near duplicates"),
             ("skipped-section", "Skipped files")]

# What to do about a gate that did not pass, in a data lead's words.
_NEXT_STEP = {
    "synthetic_fraction": "filter the flagged items (`madaudit filter` on items.parquet) or replace them with fresh real data",
    "synthetic_fraction_lower": "filter the flagged items (`madaudit filter` on items.parquet) or replace them with fresh real data",
    "out_of_manifold": "look at the items outside the reference's k-NN balls: off-topic content or a reference that misses it",
    "precision": "look at the most suspicious items: much of the candidate lies outside the reference's manifold",
    "recall": "add real data for what the candidate misses: it covers less of the reference's variety",
    "coverage": "add real data for the regions the candidate leaves empty",
    "tail_coverage": "add real data for the rare cases: the tails vanish first under MAD",
    "cluster_tail_mass": "add real data for the reference's small clusters",
    "reference_copy_rate": "remove the copies of reference items (pairs below; `madaudit filter --drop copies`): they "
                           "leak the reference into training",
    "duplicate_rate": "deduplicate the candidate (pairs below; `madaudit filter --drop duplicates`)",
    "index_recall": "raise --target-recall or run with --exact: the approximate search missed too many neighbours",
    "unreadable_share": "fix or remove the unreadable files (listed below by reason)",
    "forecast_recall": "mix in more fresh real data before reusing this mixture for training",
    "forecast_tail_coverage": "mix in more fresh real data before reusing this mixture for training",
}


def summary_findings(data: dict[str, Any], most: int = 3) -> list[str]:
    """Plain sentences for the top of the report: the gates that drove the verdict (failed first),
    each with what to do next; or why it passed."""
    order = {"fail": 0, "warn": 1}
    driving = sorted((g for g in data["gates"] if g["status"] in order), key=lambda g: order[g["status"]])
    untrained = [w for w in data["synthetic_fraction"]["warnings"] if "untrained weights" in w]
    if untrained:
        return [untrained[0][0].upper() + untrained[0][1:] + "."] + summary_findings(
            {**data, "synthetic_fraction": {**data["synthetic_fraction"], "warnings": []}}, most)
    if not driving:
        return [f"Every gate passed ({len(data['gates'])} checked): nothing in this audit argues against training on the candidate."]
    lines = []
    for g in driving[:most]:
        what = "failed" if g["status"] == "fail" else "warns"
        value = "unknown" if g.get("unknown") else _fmt(g["value"])
        lines.append(f"{g['metric']} {what}: {value}, allowed {'at least' if g['comparator'] == 'min' else 'at most'} "
                     f"{_fmt(g['threshold'])}. Next: {_NEXT_STEP.get(g['metric'], 'see the section below')}.")
    if len(driving) > most:
        lines.append(f"{len(driving) - most} more gates did not pass (table below).")
    return lines


def notebook_html(data: dict[str, Any]) -> str:
    """A fragment for notebooks: verdict, summary, gates (every string escaped)."""
    e = _h
    verdict = _token(data["verdict"], ("pass", "warn", "fail"))
    colour = {"pass": "#17602f", "warn": "#7a5400", "fail": "#8e1b1b"}[verdict]
    rows = "".join(f"<tr><td>{e(g['metric'])}</td><td>{e(_fmt(g['value']))}</td>"
                   f"<td>{'≥' if g['comparator'] == 'min' else '≤'} {e(_fmt(g['threshold']))}</td>"
                   f"<td>{e(str(g['status']).upper())}</td></tr>" for g in data["gates"])
    summary = "".join(f"<li>{e(line)}</li>" for line in summary_findings(data))
    return (f"<div><p style='font-weight:600;color:{colour}'>{e(verdict_line(data))}</p><ul>{summary}</ul>"
            f"<table><tr><th>gate</th><th>value</th><th>threshold</th><th>status</th></tr>{rows}</table></div>")


def _duplicates_context(data: dict[str, Any]) -> dict[str, Any]:
    """The rule in use, its baseline, and each shown pair: candidate item and its match."""
    nd = data["near_duplicates"]
    rate = nd.get("reference_rate")
    kinds = ("copies_of_reference", "within_candidate")
    return {
        "rule": nd.get("description") or f"{nd['rule']} rule, threshold {_fmt(nd['threshold'])}",
        "baseline": f"{100 * rate:.2g}%" if _number(rate) else None,
        "copies": len(nd["copies_of_reference"]), "within": len(nd["within_candidate"]),
        "at_most": nd.get("pairs_shown_at_most", ""),
        "pairs": [{"kind": _token(p["kind"], kinds),
                   "label": "copy of reference" if p["kind"] == "copies_of_reference" else "within candidate",
                   "candidate": p["candidate"], "match": p["match"], "distance": _fmt(p["distance"]),
                   "cosine": _fmt(p["cosine"]), "candidate_thumbnail": _safe_thumbnail(p["candidate_thumbnail"]),
                   "match_thumbnail": _safe_thumbnail(p["match_thumbnail"])}
                  for p in data.get("duplicate_pairs", [])],
    }


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _params(m: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in (m.get("params") or {}).items())
