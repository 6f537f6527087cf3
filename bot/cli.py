"""``sopbot``: serve, list, diagnose from a terminal, check the config, run the sandbox or demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings, masked, require_serving

EXIT = {"ok": 0, "warn": 1, "crit": 2, "unknown": 3}


def _settings(args: argparse.Namespace, serving: bool = False) -> Settings:
    try:
        settings = load_settings(args.config)
        if serving:
            require_serving(settings)
        return settings
    except ConfigError as exc:
        # One line per problem, each naming the field (a log collector keeps lines apart).
        for problem in exc.problems:
            print(f"sopbot: config error: {problem}", file=sys.stderr)
        raise SystemExit(78) from None  # EX_CONFIG


def cmd_list(args: argparse.Namespace) -> int:
    from bot.catalog import catalog_markdown, catalog_text
    from bot.registry import load_handlers

    registry = load_handlers()
    if args.coverage:
        return _list_coverage(args, registry)
    print(catalog_markdown(registry) if args.markdown else catalog_text(registry))
    return 0


def _list_coverage(args: argparse.Namespace, registry: object) -> int:
    from bot.approvals.actions import ACTIONS
    from bot.approvals.procedures import PROCEDURES
    from bot.coverage import coverage, coverage_markdown, coverage_text, load_scenarios
    from bot.runbook import Runbook

    path = args.runbook or _settings(args).runbook.path
    if path is None:
        print("sopbot: no runbook to measure: give --runbook PATH or configure runbook.path", file=sys.stderr)
        return 64
    try:
        runbook = Runbook.load(Path(path))
    except OSError as exc:
        print(f"sopbot: cannot read the runbook {path}: {exc.strerror}", file=sys.stderr)
        return 66  # EX_NOINPUT
    rows = coverage(registry, runbook, ACTIONS, load_scenarios(), PROCEDURES)  # type: ignore[arg-type]
    print(coverage_markdown(rows) if args.markdown else coverage_text(rows))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from bot.commands import CommandError, likely, resolve
    from bot.engine import run_sop
    from bot.registry import BadArguments, UnknownSOP, load_handlers
    from bot.render import report_text
    from bot.runtime import build_context, load_runbook

    settings = _settings(args)
    registry = load_handlers()
    try:
        request = resolve(registry, args.sop_id, args.args)
    except UnknownSOP as exc:
        meant = likely(exc.sop_id, exc.suggestions)
        hint = f" Did you mean: {', '.join(meant)}?" if meant else ""
        print(f"sopbot: no SOP {exc.sop_id!r}.{hint} ('sopbot list' shows them all)", file=sys.stderr)
        return 64
    except (BadArguments, CommandError) as exc:
        print(f"sopbot: {exc}", file=sys.stderr)
        if isinstance(exc, BadArguments):
            print(f"usage: sopbot diagnose {exc.sop.id} {exc.sop.usage()}", file=sys.stderr)
        return 64

    async def go() -> int:
        ctx = await build_context(settings)
        try:
            report = await run_sop(request.sop, ctx, request.params)  # type: ignore[arg-type]
        finally:
            await ctx.close()
        print(report_text(report, load_runbook(settings)))
        return EXIT[report.status.value]

    return asyncio.run(go())


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """The daily health check (runbook 11.1) in a terminal: exit 0 all good, 1 warnings or
    unknown, 2 critical."""
    from bot.clients.alertmanager import AlertmanagerClient
    from bot.health import EXIT_CODES, HealthService, HealthStore, health_text
    from bot.registry import load_handlers
    from bot.runtime import build_context, load_runbook
    from bot.store import open_store

    settings = _settings(args)
    registry = load_handlers()

    async def go() -> int:
        ctx = await build_context(settings)
        if settings.alertmanager.url:
            ctx.alertmanager = AlertmanagerClient(settings.alertmanager.url)
        store = None if args.no_record else await open_store(settings.store)  # SQLite or PostgreSQL
        try:
            hstore = None
            if store is not None:
                hstore = HealthStore(store)
                await hstore.setup()
            service = HealthService(settings.health, registry=registry, ctx=ctx, store=hstore)
            sched = service.schedule(args.schedule) if args.schedule else None
            if args.schedule and sched is None:
                print(f"sopbot: no health schedule {args.schedule!r}", file=sys.stderr)
                return 64
            name = args.schedule or (settings.health.schedules[0].name if settings.health.schedules else "daily")
            report = await service.report(name, service.checks_for(sched))
        finally:
            if ctx.alertmanager is not None:
                await ctx.alertmanager.close()
            await ctx.close()
            if store is not None:
                await store.close()
        print(health_text(report, load_runbook(settings)))
        return EXIT_CODES[report.status]

    return asyncio.run(go())


def cmd_check_config(args: argparse.Namespace) -> int:
    from bot.runtime import check_connections

    settings = _settings(args)
    print(json.dumps(masked(settings), indent=2, default=str))
    results = asyncio.run(check_connections(settings))
    worst = 0
    for name, problem in results.items():
        print(f"{name:<12} {'ok' if problem is None else 'FAILED: ' + problem}")
        worst = worst if problem is None else 1
    return worst


def cmd_run(args: argparse.Namespace) -> int:
    from bot.runtime import serve

    from bot.store import StoreError

    settings = _settings(args, serving=True)
    try:
        return asyncio.run(serve(settings))
    except StoreError as exc:  # e.g. an existing database on a read-only filesystem
        print(f"sopbot: {exc}", file=sys.stderr)
        return 74  # EX_IOERR


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox.runner import print_scenarios, serve_sandbox

    if args.list:
        print_scenarios()
        return 0
    return asyncio.run(serve_sandbox(args.scenario or [], size=args.size, workdir=args.workdir,
                                     prometheus=args.prometheus))


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return asyncio.run(run_demo(args.scenario or ["vault-partially-sealed"], script=args.script,
                                workdir=args.workdir, prometheus=args.prometheus))


def cmd_docs(args: argparse.Namespace) -> int:
    from bot.docs import DOCS_DIR, run

    return run(check=args.check, docs_dir=args.dir or DOCS_DIR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sopbot", description="SOP Bot: serve, list, diagnose from a terminal, check the config, "
        "run the sandbox or the demo. 'sopbot COMMAND --help' for one command.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, help="YAML config file (environment SOPBOT_* wins)")
        return p

    with_config(sub.add_parser("run", help="serve: slash commands, webhooks, schedules")).set_defaults(
        func=cmd_run)
    p = with_config(sub.add_parser("list", help="the SOPs the bot can run, or the runbook's coverage"))
    p.add_argument("--markdown", action="store_true", help="as a Markdown table (for the README)")
    p.add_argument("--coverage", action="store_true",
                   help="every runbook entry with its SOPs, alerts, actions, scenarios, guidance only")
    p.add_argument("--runbook", type=Path, metavar="PATH", help="runbook to measure (default: runbook.path)")
    p.set_defaults(func=cmd_list)
    p = with_config(sub.add_parser(
        "diagnose", help="run one SOP and print the report (exit 0 ok, 1 warn, 2 crit, 3 unknown)"))
    p.add_argument("sop_id", help="the SOP to run ('sopbot list' shows them)")
    p.add_argument("args", nargs="*", metavar="key=value", help="the SOP's arguments, e.g. replica=vault-1")
    p.set_defaults(func=cmd_diagnose)
    p = with_config(sub.add_parser(
        "healthcheck", help="the daily health check now (exit 0 all good, 1 warnings/unknown, 2 critical)"))
    p.add_argument("--schedule", metavar="NAME", help="a configured schedule's areas (default: all)")
    p.add_argument("--no-record", action="store_true",
                   help="do not update the store (the 'what changed' history)")
    p.set_defaults(func=cmd_healthcheck)
    with_config(sub.add_parser("check-config", help="print the effective config (secrets masked) "
                               "and check Mattermost, Kubernetes and Vault answer")).set_defaults(
        func=cmd_check_config)
    p = sub.add_parser("sandbox", help="a simulated platform on 127.0.0.1 (Kubernetes, Vault, Mattermost, "
                       "Alertmanager)")
    p.add_argument("--scenario", action="append", metavar="NAME", help="failure scenario (repeatable)")
    p.add_argument("--size", type=int, default=1, help="scale the cluster up (benchmarks)")
    p.add_argument("--workdir", type=Path, default=Path("sandbox-work"),
                   help="where to write kubeconfig, sopbot.yaml and env (default: ./sandbox-work, kept)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--prometheus", action="store_true",
                   help="start a real Prometheus (the Debian package) scraping the exporter metrics")
    p.set_defaults(func=cmd_sandbox)
    p = sub.add_parser("docs", help="regenerate docs/configuration.md and docs/sop-catalog.md from the code")
    p.add_argument("--check", action="store_true", help="only check; exit 1 when a file is out of date")
    p.add_argument("--dir", type=Path, help="docs directory (default: the repository's docs/)")
    p.set_defaults(func=cmd_docs)
    p = sub.add_parser("demo", help="sandbox + bot + a terminal chat to type /sop commands in")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="failure scenario to start with (repeatable; default vault-partially-sealed; "
                        "'sopbot sandbox --list' shows them)")
    p.add_argument("--script", type=Path, help="read commands from this file instead of the terminal")
    p.add_argument("--workdir", type=Path,
                   help="keep the sandbox's files (kubeconfig, sopbot.yaml, env, database) here; "
                        "default: a temporary directory removed at the end")
    p.add_argument("--prometheus", action="store_true",
                   help="start a real Prometheus scraping the exporter metrics, for the SOPs that read it")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file or port the user named: their error, not a traceback
        print(f"sopbot {args.command}: {exc}", file=sys.stderr)
        return 74  # EX_IOERR


if __name__ == "__main__":
    raise SystemExit(main())
