"""The read API's OpenAPI document, checked by schemathesis against the live server.

schemathesis loads (and so validates) ``/api/openapi.json``, generates requests for every
GET route from it, valid ones and invalid ones, and checks each answer against the
document: status codes, content types, headers and JSON bodies; an invalid request must
get a 4xx. Most generated run ids are replaced by real ones so that 200 answers are
exercised, not only 404s.

The strategies are driven by plain Hypothesis (``APIOperation.as_strategy``) rather than
``schemathesis.pytest.from_fixture``, whose lazy loader does not run under pytest 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
from test_api import LiveServer  # noqa: E402  (same folder)

from dashboards.api import create_api  # noqa: E402
from dashboards.catalog import RunCatalog  # noqa: E402

RUN_IDS = ("morning_a", "morning_b")
ROUTES = ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/kpis",
          "/api/runs/{run_id}/catalog", "/api/runs/{run_id}/traces",
          "/api/runs/{run_id}/events", "/api/compare")


@pytest.fixture(scope="module")
def api_schema(runs_root: Path) -> Iterator[Any]:
    with LiveServer(create_api(RunCatalog(runs_root))) as url:
        yield schemathesis.openapi.from_url(f"{url}/api/openapi.json")


def _operation(schema: Any, path: str) -> Any:
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == path and op.method.upper() == "GET":
            return op
    pytest.skip(f"no GET {path} in this build")


#: Routes whose parameters can be invalid (a bound, an enum, a date-time); the others
#: take any string, so no negative request exists for them.
CONSTRAINED = ("/api/runs/{run_id}/traces", "/api/runs/{run_id}/events", "/api/compare")


def _strategy(op: Any, mode: GenerationMode) -> Any:
    if "{run_id}" in op.path:
        options = [op.as_strategy(mode, path_parameters={"run_id": rid}) for rid in RUN_IDS]
        options.append(op.as_strategy(mode))
        if op.path.endswith("/traces") and mode == GenerationMode.POSITIVE:
            # Names the run holds, so that formats, layouts, times and max_points are
            # exercised on real data rather than refused as unknown names.
            options.append(op.as_strategy(
                mode, path_parameters={"run_id": RUN_IDS[0]},
                query={"quantity": ["import_kw", "power_kw"], "entity": ["site", "CA001/1"]},
            ))
        return st.one_of(*options)
    if op.path == "/api/compare" and mode == GenerationMode.POSITIVE:
        return op.as_strategy(mode, query={"a": RUN_IDS[0], "b": RUN_IDS[1]})
    return op.as_strategy(mode)


@pytest.mark.parametrize("path", ROUTES)
def test_api_answers_as_documented(api_schema, path: str) -> None:
    op = _operation(api_schema, path)
    modes = [(GenerationMode.POSITIVE, 12)]
    if path in CONSTRAINED:
        modes.append((GenerationMode.NEGATIVE, 8))
    for mode, examples in modes:

        @given(case=_strategy(op, mode))
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            # A schema-valid request may still be refused for its meaning (start after
            # end, an unknown sort field, an entity the run lacks): a 4xx with a reason
            # is right there, so that one check is left out.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
