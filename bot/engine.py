"""Running a handler: timeout, failure isolation, timing. Never raises for a handler's fault."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.clients.errors import SourceError
from bot.context import HandlerContext
from bot.models import Finding, Report, Status
from bot.registry import SOP, SOPParams

log = logging.getLogger(__name__)


async def run_sop(sop: SOP, ctx: HandlerContext, params: SOPParams | None = None, *,
                  timeout_s: float = 60.0) -> Report:
    params = params if params is not None else sop.params()
    report = Report(sop_id=sop.id, title=sop.title, section=sop.section, severity=sop.severity,
                    params={k: str(v) for k, v in params.model_dump(exclude_defaults=True).items()})
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            report.findings = list(await sop.func(ctx, params))
    except TimeoutError:
        report.findings = [Finding(status=Status.unknown, target=sop.id,
                                   summary=f"diagnosis did not finish within {timeout_s:g}s")]
    except SourceError as exc:
        report.findings = [Finding(status=Status.unknown, target=exc.source, summary=exc.reason)]
    except Exception as exc:  # a handler bug must not take the bot down
        log.exception("handler %s failed", sop.id)
        report.findings = [Finding(status=Status.unknown, target=sop.id,
                                   summary=f"handler failed: {exc.__class__.__name__}")]
    report.duration_s = time.perf_counter() - started
    return report
