"""What every page of the dashboard shares: the run catalog, links and styles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from dash import Dash, html
from dash.dash_table.DataTable import DataTable

from dashboards.catalog import RunCatalog, UnknownRunError
from twin.run_folder import RunFolder


@dataclass
class Pages:
    """The run catalog and the app (for links that honour the mount prefix).

    Attributes:
        app: the Dash app.
        catalog: the runs served.
    """

    app: Dash
    catalog: RunCatalog

    def href(self, path: str, **query: str) -> str:
        """Link to a dashboard path (``/run/x``) under the app's request prefix."""
        link: str = self.app.get_relative_path(path)  # type: ignore[no-untyped-call]
        if query:
            link += "?" + urlencode(query)
        return link

    def run_href(self, run_id: str, live: bool = False) -> str:
        """Link to the run view (or live view) of ``run_id``."""
        return self.href(f"/{'live' if live else 'run'}/{quote(run_id, safe='')}")

    def compare_href(self, a: str, b: str) -> str:
        """Link to the compare view of runs ``a`` and ``b``."""
        return self.href("/compare", a=a, b=b)

    def folder(self, run_id: str) -> RunFolder:
        """The reader of ``run_id``.

        Raises:
            UnknownRunError: no such run.
        """
        return self.catalog.get(run_id)


def unknown_run(pages: Pages, err: UnknownRunError) -> html.Div:
    """Page body for a run id the catalog does not know."""
    return html.Div(
        [html.H2("Run not found"), html.P(str(err)),
         html.A("All runs", href=pages.href("/"))],
        className="notice",
    )


def badge(state: str) -> html.Span:
    """A coloured run-state label."""
    return html.Span(state, className=f"badge badge-{state}")


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #222; background: #f6f7f9; }
.topbar { background: #1d2b3a; color: #fff; padding: 10px 20px; display: flex;
          gap: 24px; align-items: baseline; }
.topbar a { color: #cfe3ff; text-decoration: none; }
.topbar .brand { font-weight: 600; font-size: 18px; color: #fff; }
.page { padding: 14px 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px;
        padding: 8px 12px; min-width: 130px; }
.card .label { font-size: 12px; color: #666; }
.card .value { font-size: 18px; font-weight: 600; }
.panel { background: #fff; border: 1px solid #dde1e6; border-radius: 6px;
         margin: 10px 0; padding: 6px; }
.badge { padding: 2px 8px; border-radius: 10px; font-size: 12px; color: #fff;
         background: #777; margin-left: 8px; }
.badge-running { background: #2e8b57; }
.badge-finished { background: #3a6ea5; }
.badge-failed, .badge-interrupted { background: #b03a2e; }
.muted { color: #666; font-size: 13px; }
.statement { background: #fff; border-left: 4px solid #3a6ea5; padding: 8px 12px;
             font-family: ui-monospace, monospace; font-size: 13px; white-space: pre-wrap; }
.controls { display: flex; gap: 16px; align-items: end; flex-wrap: wrap; }
.controls label { font-size: 12px; color: #555; display: block; }
.button { display: inline-block; padding: 6px 12px; border-radius: 4px;
          background: #3a6ea5; color: #fff; text-decoration: none; border: none;
          cursor: pointer; font-size: 14px; }
.button.disabled { background: #aab4bf; pointer-events: none; }
.notice { background: #fff3cd; padding: 12px; border-radius: 6px; }
"""


def index_string() -> str:
    """Dash's page template with the dashboard's styles inlined."""
    return (
        "<!DOCTYPE html><html><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}"
        f"<style>{STYLE}</style></head><body>{{%app_entry%}}<footer>{{%config%}}"
        "{%scripts%}{%renderer%}</footer></body></html>"
    )


def data_table(**kwargs: Any) -> DataTable:
    """A DataTable with the dashboard's styling (keyword arguments as DataTable's)."""
    return DataTable(**{**table_style(), **kwargs})


def table_style() -> dict[str, Any]:
    """Common DataTable styling keyword arguments."""
    return {
        "style_table": {"overflowX": "auto"},
        "style_cell": {"fontFamily": "system-ui, sans-serif", "fontSize": 13,
                       "padding": "4px 8px", "textAlign": "left", "maxWidth": 420,
                       "overflow": "hidden", "textOverflow": "ellipsis"},
        "style_header": {"fontWeight": 600, "backgroundColor": "#eef1f5"},
    }
