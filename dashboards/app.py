"""The Dash dashboard: run list, run view, live view and compare view.

Pages (one ``dcc.Location``, paths relative to the mount prefix):

* ``/`` — run list (:mod:`dashboards.page_runs`);
* ``/run/<id>`` — run view, refreshing every second while the run is written, and
  ``/live/<id>`` — the same with the refresh on until the run finishes
  (:mod:`dashboards.page_run`);
* ``/compare?a=<id>&b=<id>`` — run B against run A (:mod:`dashboards.page_compare`).

:func:`create_dash` builds the app over a :class:`dashboards.catalog.RunCatalog`. It runs
standalone (``create_dash(catalog).run()``) or mounted under a prefix in another server:
pass the prefix the browser sees as ``requests_pathname_prefix`` (e.g. ``"/dash/"``) and
mount ``app.server`` (a Flask WSGI app) there, e.g. with ``a2wsgi.WSGIMiddleware`` in
FastAPI; the Flask routes stay at ``/`` because the mounting server strips the prefix.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote

from dash import Dash, Input, Output, dcc, html

from dashboards import page_compare, page_run, page_runs
from dashboards.catalog import RunCatalog
from dashboards.context import Pages, index_string


def _topbar(pages: Pages) -> html.Div:
    return html.Div(
        [html.A("MiGrid Twin", href=pages.href("/"), className="brand"),
         html.A("Runs", href=pages.href("/")),
         html.A("Compare", href=pages.href("/compare"))],
        className="topbar",
    )


def route(pages: Pages, pathname: str | None, search: str | None) -> html.Div:
    """Page body for a browser path (with the mount prefix) and query string."""
    path = pages.app.strip_relative_path(pathname or "/") or ""
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        return page_runs.layout(pages)
    if parts[0] in ("run", "live") and len(parts) >= 2:
        return page_run.layout(pages, "/".join(parts[1:]), live=parts[0] == "live")
    if parts[0] == "compare":
        query = parse_qs((search or "").lstrip("?"))
        a, b = query.get("a", []), query.get("b", [])
        return page_compare.layout(pages, a[0] if a else None, b[0] if b else None)
    return html.Div([html.H2("Not found"), html.P(f"no page {pathname!r}"),
                     html.A("all runs", href=pages.href("/"))], className="page notice")


def create_dash(
    catalog: RunCatalog,
    *,
    requests_pathname_prefix: str = "/",
    routes_pathname_prefix: str = "/",
    title: str = "MiGrid Twin",
) -> Dash:
    """Build the dashboard app over ``catalog``.

    Args:
        catalog: the runs to show (re-listed on every request, so new runs appear).
        requests_pathname_prefix: URL prefix the browser uses for the app's pages,
            assets and callbacks (``"/"`` standalone; ``"/dash/"`` when mounted there).
        routes_pathname_prefix: prefix of the Flask routes themselves; ``"/"`` when the
            mounting server strips the mount path (Starlette ``mount`` with ``a2wsgi``,
            werkzeug ``DispatcherMiddleware``); set it equal to
            ``requests_pathname_prefix`` to serve under a prefix without a mounting server.
        title: browser tab title.

    Returns:
        The Dash app; ``app.server`` is its Flask WSGI app.
    """
    app = Dash(
        __name__,
        requests_pathname_prefix=requests_pathname_prefix,
        routes_pathname_prefix=routes_pathname_prefix,
        suppress_callback_exceptions=True,
        title=title,
        update_title=None,  # type: ignore[arg-type]
        index_string=index_string(),
        serve_locally=True,
    )
    pages = Pages(app, catalog)
    app.layout = html.Div(
        [dcc.Location(id="url", refresh=False), _topbar(pages), html.Div(id="page")]
    )

    @app.callback(Output("page", "children"), Input("url", "pathname"),
                  Input("url", "search"))
    def show(pathname: str | None, search: str | None) -> html.Div:
        return route(pages, pathname, search)

    page_runs.register(app, pages)
    page_run.register(app, pages)
    page_compare.register(app, pages)
    return app


def main() -> None:  # pragma: no cover - manual use; the CLI is ``migrid dash``
    """Serve the runs under ``runs/`` on http://127.0.0.1:8050/ (development)."""
    import sys

    root = sys.argv[1] if len(sys.argv) > 1 else "runs"
    create_dash(RunCatalog(root)).run(host="127.0.0.1", port=8050, debug=False)


if __name__ == "__main__":  # pragma: no cover
    main()
