"""The ``btc-assets`` command line: a thin face over the Dagster definitions and the stage modules.

Every command works on one ``BTC_ASSETS_HOME`` (``--home`` or the environment, default ``./data``) and uses the
persistent Dagster instance inside it (``DAGSTER_HOME=<home>/dagster``), so runs started here show in ``ui``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from btc_assets.config import PROFILES, Paths, get_profile

DAGSTER_YAML = """\
# Written by btc-assets. The instance keeps run history and materialisations so staleness survives restarts.
telemetry:
  enabled: false
"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_home(home: str | None) -> Paths:
    """Resolve and create ``BTC_ASSETS_HOME``; point ``DAGSTER_HOME`` at the instance inside it."""
    paths = Paths.from_env(home).ensure()
    os.environ["BTC_ASSETS_HOME"] = str(paths.home)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    config = paths.dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return paths


def _apply_source_options(args: argparse.Namespace) -> None:
    for option, env in (("source", "BTC_ASSETS_SOURCE"), ("ohlcv", "BTC_ASSETS_OHLCV"),
                        ("funding", "BTC_ASSETS_FUNDING")):
        value = getattr(args, option, None)
        if value and option != "source":
            # the UI's code server runs in another working directory: pass absolute paths
            value = ",".join(os.path.abspath(os.path.expanduser(v.strip())) for v in value.split(",") if v.strip())
        if value:
            os.environ[env] = value


def cmd_run(args: argparse.Namespace) -> int:
    """Materialise the whole asset graph headlessly in the persistent instance."""
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    paths = prepare_home(args.home)
    _apply_source_options(args)
    profile = get_profile(args.profile)
    os.environ["BTC_ASSETS_PROFILE"] = profile.name
    from btc_assets.defs import build_definitions

    defs = build_definitions()
    job = defs.resolve_job_def("btc_study")
    _say(f"btc-assets run: profile {profile.name} ({profile.description}); home {paths.home}")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={"btc_assets/profile": profile.name},
            run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}},
            raise_on_error=False,
        )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                _say(f"FAILED {event.step_key}: {event.step_failure_data.error.message.strip()}")
        return 1
    materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
                    if e.asset_key is not None]
    _say(f"done: run {result.run_id} materialised {', '.join(materialized)}")
    _say(f"query it: btc-assets sql \"SELECT count(*) FROM market_bars\"  (warehouse {paths.warehouse})")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start ``dagster dev`` on this project with the same persistent instance."""
    paths = prepare_home(args.home)
    _apply_source_options(args)
    argv = [sys.executable, "-m", "dagster", "dev", "-m", "btc_assets.defs", "-h", args.host, "-p", str(args.port)]
    _say(f"btc-assets ui: DAGSTER_HOME={paths.dagster_home}; open http://{args.host}:{args.port}")
    os.execvp(argv[0], argv)
    return 0  # pragma: no cover - exec does not return


def cmd_ingest(args: argparse.Namespace) -> int:
    """Validate user files; print what they hold; exit non-zero with the error on bad input."""
    from btc_assets.ingestion import DataValidationError, find_gaps, inspect_file

    status = 0
    for file in args.files:
        try:
            kind, loaded = inspect_file(file)
        except DataValidationError as err:
            _say(f"REJECTED {err}")
            status = 2
            continue
        frame = loaded.frame
        line = f"OK {file}: {kind}, {len(frame)} rows, {frame['timestamp'].iloc[0]} .. {frame['timestamp'].iloc[-1]}"
        if kind == "ohlcv":
            gaps = find_gaps(frame["timestamp"])
            line += f", {len(gaps)} gap(s) / {int(gaps['hours'].sum())} missing hour(s)"
            for row in gaps.itertuples():
                line += f"\n    gap {row.first_missing} .. {row.last_missing} ({row.hours} h)"
        for repair in loaded.repairs:
            line += f"\n    {repair}"
        print(line)
    return status


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch real exchange data into ``raw/`` (resumable, checksum verified)."""
    from btc_assets.ingestion import download

    paths = prepare_home(args.home)
    if args.via == "ccxt":
        symbol = args.symbol if "/" in args.symbol else f"{args.symbol[:-4]}/{args.symbol[-4:]}"
        result = download.download_ccxt(paths.raw, symbol=symbol, perp_symbol=f"{symbol}:{symbol.split('/')[1]}",
                                         progress=_say)
    else:
        result = download.download_binance_archive(paths.raw / "binance", symbol=args.symbol, start=args.start,
                                                   end=args.end, progress=_say)
    _say(f"done: {result.fetched} fetched, {result.cached} already cached, {len(result.missing)} not published")
    files = ",".join(str(p) for p in result.ohlcv_files)
    print(f"{len(result.ohlcv_files)} kline file(s), {len(result.funding_files)} funding file(s) under {paths.raw}")
    if files:
        print("use them: BTC_ASSETS_SOURCE=download btc-assets run")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Query the warehouse with DuckDB (in-memory views over the Parquet files; nothing is locked)."""
    from btc_assets.storage import Warehouse

    paths = Paths.from_env(args.home)
    warehouse = Warehouse(paths.warehouse)
    if not warehouse.tables():
        _say(f"the warehouse {paths.warehouse} is empty: run `btc-assets run` first")
        return 1
    frame = warehouse.query(args.query)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        with_limit = frame.head(args.max_rows)
        print(with_limit.to_string(index=False))
        if len(frame) > args.max_rows:
            print(f"... {len(frame)} rows ({args.max_rows} shown)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="btc-assets", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="state folder (default: $BTC_ASSETS_HOME or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    def source_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", choices=["demo", "files", "download"], help="market data source")
        p.add_argument("--ohlcv", help="OHLCV file(s) or glob(s), comma separated (implies --source files)")
        p.add_argument("--funding", help="funding file(s) or glob(s), comma separated")

    run = sub.add_parser("run", help="materialise the whole asset graph in the persistent instance")
    run.add_argument("--profile", choices=list(PROFILES), default=None, help="study size (default quick)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    source_options(run)
    run.set_defaults(func=cmd_run)

    ui = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on the same instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    source_options(ui)
    ui.set_defaults(func=cmd_ui)

    ingest = sub.add_parser("ingest", help="validate OHLCV / funding files; non-zero exit on bad input")
    ingest.add_argument("files", nargs="+", type=Path)
    ingest.set_defaults(func=cmd_ingest)

    dl = sub.add_parser("download", help="download real BTCUSDT klines and funding into raw/")
    dl.add_argument("--symbol", default="BTCUSDT")
    dl.add_argument("--start", default="2017-08", help="first month, YYYY-MM")
    dl.add_argument("--end", default=None, help="last month, YYYY-MM (default: up to yesterday)")
    dl.add_argument("--via", choices=["archive", "ccxt"], default="archive")
    dl.set_defaults(func=cmd_download)

    sql = sub.add_parser("sql", help="query the warehouse with DuckDB")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "csv"], default="table")
    sql.add_argument("--max-rows", type=int, default=50)
    sql.set_defaults(func=cmd_sql)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
