"""`run_checks`: every row of the doctor's table in order, each system's rows from its module.

`STEPS` is the order. A check whose prerequisites are missing is skipped, because the missing
variable (or the failed row it needs) already has its own failing row; `offline` skips every
check that would contact something. A contacting check that raises becomes a failing row, so a
bug cannot hide the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometei.config import Settings
from prometei.doctor.amocrm import check_amocrm, check_webhook_subscription
from prometei.doctor.amocrm_writeback import ROWS as WRITEBACK_ROWS
from prometei.doctor.amocrm_writeback import check_amocrm_writeback, enabled_settings
from prometei.doctor.check import Check, fail, skip
from prometei.doctor.environment import check_environment
from prometei.doctor.erp import check_erp
from prometei.doctor.erp_schema import ROWS as ERP_SCHEMA_ROWS
from prometei.doctor.erp_schema import check_erp_schema
from prometei.doctor.inngest import check_dev_server, check_inngest
from prometei.doctor.kv import check_kv
from prometei.doctor.webhook import check_webhook_secret
from prometei.services import Services

Earlier = Callable[[str], Check | None]  # an earlier row by name, for checks that need it


@dataclass(frozen=True)
class Step:
    name: str  # the row's name, or the first row's when the step gives several
    run: Callable[[Services, Earlier], Check | list[Check]]
    contacts: bool = True  # skipped by --offline
    only_if: Callable[[Settings], bool] | None = None  # no row at all when this is False
    # The rows the step gives (for skipped rows: named as they are when the step runs).
    rows: Callable[[Settings | None], tuple[str, ...]] | None = None

    def row_names(self, settings: Settings | None) -> tuple[str, ...]:
        return self.rows(settings) if self.rows is not None else (self.name,)


def _writeback_rows(settings: Settings | None) -> tuple[str, ...]:
    with_id_field = settings is not None and settings.amocrm_erp_id_field is not None
    return WRITEBACK_ROWS if with_id_field else WRITEBACK_ROWS[:1]


STEPS = (
    Step("kv", lambda services, _: check_kv(services.settings)),
    Step("amocrm", lambda services, _: check_amocrm(services)),
    Step(
        "amocrm write-back",
        lambda services, earlier: check_amocrm_writeback(services, amocrm=earlier("amocrm")),
        only_if=lambda settings: bool(enabled_settings(settings)),
        rows=_writeback_rows,
    ),
    Step(
        "webhook subscription",
        lambda services, earlier: check_webhook_subscription(services, amocrm=earlier("amocrm")),
    ),
    Step("erp", lambda services, _: check_erp(services)),
    Step(
        "erp schema",
        lambda services, earlier: check_erp_schema(services, login=earlier("erp")),
        rows=lambda _: ERP_SCHEMA_ROWS,
    ),
    Step(
        "inngest dev server",
        lambda services, _: check_dev_server(services.settings),
        only_if=lambda settings: settings.is_dev,
    ),
    Step("inngest", lambda services, _: check_inngest(services.settings), contacts=False),
    Step(
        "webhook secret",
        lambda services, _: check_webhook_secret(services.settings),
        contacts=False,
    ),
)


def run_checks(
    environ: Mapping[str, str],
    *,
    offline: bool = False,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check in order; `on_check` sees each row as soon as it is known."""
    results: list[Check] = []

    def emit(check: Check) -> None:
        results.append(check)
        if on_check is not None:
            on_check(check)

    rows, settings = check_environment(environ)
    for row in rows:
        emit(row)
    if settings is None:
        for step in STEPS:
            if step.only_if is None:
                for name in step.row_names(None):
                    emit(skip(name, "not run: the configuration could not be loaded (see above)"))
        return results

    services = Services(settings)

    def earlier(name: str) -> Check | None:
        return next((check for check in results if check.name == name), None)

    for step in STEPS:
        if step.only_if is not None and not step.only_if(settings):
            continue
        if not step.contacts:
            _emit_all(emit, step.run(services, earlier))
        elif offline:
            for name in step.row_names(settings):
                emit(skip(name, "not run (--offline)"))
        else:
            try:
                produced = step.run(services, earlier)
            except Exception as exc:  # a bug must not hide the remaining checks
                emit(fail(step.name, f"unexpected {type(exc).__name__}", "report this as a bug"))
                continue
            _emit_all(emit, produced)
    return results


def _emit_all(emit: Callable[[Check], None], produced: Check | list[Check]) -> None:
    for row in produced if isinstance(produced, list) else [produced]:
        emit(row)
