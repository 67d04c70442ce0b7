"""The patient's access report as a readable HTML page and as a PDF.

HTML is rendered by Jinja2 with autoescaping on, so nothing in a ledger entry (a token name, a
stated purpose) can inject markup into the page a patient opens (OWASP ASVS 5.0 V3.2.2). The
PDF draws the accesses per month as bars above the table: a patient sees at a glance when their
record was opened. Text in the PDF uses a Unicode TrueType font (DejaVu Sans, from Debian's
fonts-dejavu-core) when one is installed; without it, names are transliterated to Latin-1.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

from fpdf import FPDF, FontFace
from jinja2 import Environment, select_autoescape

from egide.ledger.report import AccessReport

EMERGENCY_LABEL = "EMERGENCY ACCESS (break-the-glass): "
PDF_MAX_ROWS = 1000  # a PDF stays quick to make and to read; the HTML and JSON list more
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Who accessed your medical record</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; }
 table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
 th, td { border-bottom: 1px solid #ddd; padding: 0.4rem; text-align: left; vertical-align: top; }
 th { background: #f3f5f7; }
 .refused { color: #a40000; }
 .emergency { background: #fff4e0; }
 .emergency strong { color: #8a4b00; }
 .summary { margin: 1rem 0; }
</style>
</head>
<body>
<h1>Who accessed your medical record</h1>
<p class="summary">Patient record <code>{{ report.patient_id }}</code> &middot; report made
{{ report.generated.strftime("%d %B %Y at %H:%M UTC") }} &middot;
{{ report.lines|length }} accesses by {{ report.people }} people or systems.</p>
<p>Every access to your record is written to a tamper-evident ledger at the moment it happens.
If an access below surprises you, contact the clinic's data-protection officer.</p>
<table>
<thead><tr><th>When</th><th>Who</th><th>Role</th><th>Department</th><th>What</th>
<th>Why</th><th>From where</th><th>Result</th></tr></thead>
<tbody>
{% for line in report.lines %}
<tr class="{% if line.outcome != "done" %}refused{% endif %}
{%- if line.emergency %} emergency{% endif %}">
<td>{{ line.time.strftime("%Y-%m-%d %H:%M") }}</td><td>{{ line.who }}</td>
<td>{{ line.role }}</td><td>{{ line.department }}</td>
<td>{{ line.what }} {{ line.action }}{% if line.count > 1 %} ({{ line.count }}){% endif %}</td>
<td>{% if line.emergency %}<strong>Emergency access (break-the-glass):</strong>
{% endif %}{{ line.why }}</td><td>{{ line.where }}</td><td>{{ line.outcome }}</td>
</tr>
{% else %}
<tr><td colspan="8">Nobody has accessed your record.</td></tr>
{% endfor %}
</tbody>
</table>
</body>
</html>
"""

_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def render_html(report: AccessReport) -> str:
    return _ENV.from_string(_TEMPLATE).render(report=report)


def _latin1(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return (
        "".join(c for c in folded if not unicodedata.combining(c))
        .encode("latin-1", "replace")
        .decode("latin-1")
    )


class _Pdf(FPDF):
    def __init__(self, font: Path | None) -> None:
        super().__init__(orientation="landscape", format="A4")
        self.unicode_font = font is not None
        if font is not None:
            self.add_font("Report", "", str(font))
            self.family = "Report"
        else:
            self.family = "Helvetica"
        self.set_auto_page_break(auto=True, margin=12)

    def text_(self, value: str) -> str:
        return value if self.unicode_font else _latin1(value)


def _font() -> Path | None:
    return next((p for p in FONT_CANDIDATES if p.is_file()), None)


def _bars(pdf: _Pdf, report: AccessReport) -> None:
    """Accesses per month, drawn as bars (the last 12 months that have any)."""
    months = Counter(line.time.strftime("%Y-%m") for line in report.lines)
    if not months:
        return
    shown = sorted(months)[-12:]
    peak = max(months[m] for m in shown)
    left, bottom, height, width = 15.0, pdf.get_y() + 38, 30.0, 18.0
    pdf.set_font(pdf.family, size=7)
    for i, month in enumerate(shown):
        bar = height * months[month] / peak
        x = left + i * (width + 4)
        pdf.set_fill_color(40, 90, 160)
        pdf.rect(x, bottom - bar, width, bar, style="F")
        pdf.set_xy(x, bottom - bar - 4)
        pdf.cell(width, 4, str(months[month]), align="C")
        pdf.set_xy(x, bottom + 1)
        pdf.cell(width, 4, month, align="C")
    pdf.set_fill_color(255, 255, 255)
    pdf.set_y(bottom + 8)


def render_pdf(report: AccessReport) -> bytes:
    pdf = _Pdf(_font())
    pdf.set_title("Who accessed your medical record")
    pdf.set_creator("Égide" if pdf.unicode_font else "Egide")
    pdf.add_page()
    pdf.set_font(pdf.family, size=16)
    pdf.cell(0, 10, pdf.text_("Who accessed your medical record"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.family, size=9)
    summary = (
        f"Patient record {report.patient_id} - report made "
        f"{report.generated:%d %B %Y at %H:%M} UTC - {len(report.lines)} accesses by "
        f"{report.people} people or systems."
    )
    pdf.multi_cell(0, 5, pdf.text_(summary), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.cell(0, 5, pdf.text_("Accesses per month"), new_x="LMARGIN", new_y="NEXT")
    _bars(pdf, report)
    widths = (28, 45, 30, 30, 45, 55, 30, 14)
    head = ("When", "Who", "Role", "Department", "What", "Why", "From where", "Result")
    pdf.set_font(pdf.family, size=7)
    with pdf.table(
        col_widths=widths,
        text_align="LEFT",
        line_height=4,
        headings_style=FontFace(emphasis="", fill_color=(235, 238, 242)),
    ) as table:
        header = table.row()
        for title in head:
            header.cell(title)
        shown = report.lines[-PDF_MAX_ROWS:]
        if len(report.lines) > len(shown):
            note = table.row()
            note.cell(
                pdf.text_(f"Showing the {len(shown)} most recent of {len(report.lines)} accesses."),
                colspan=8,
            )
        for line in shown:
            row = table.row()
            what = f"{line.what} {line.action}" + (f" ({line.count})" if line.count > 1 else "")
            for value in (
                line.time.strftime("%Y-%m-%d %H:%M"),
                line.who,
                line.role,
                line.department,
                what,
                (EMERGENCY_LABEL + line.why) if line.emergency else line.why,
                line.where,
                line.outcome,
            ):
                row.cell(pdf.text_(value))
        if not report.lines:
            table.row().cell(pdf.text_("Nobody has accessed your record."), colspan=8)
    return bytes(pdf.output())
