"""The ``btc-assets`` command line: a thin face over the Dagster definitions and the stage modules.

Every command works on one ``BTC_ASSETS_HOME`` (``--home`` or the environment, default ``./data``) and uses the
persistent Dagster instance inside it (``<home>/dagster``), so runs started here show in ``ui``. The settings (home,
profile, settings file, sampler, market source) are resolved once per command
(:func:`btc_assets.settings.resolve_settings`) and handed to the definitions and to every child process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from btc_assets.atomic import write_text_atomic
from btc_assets.config import PROFILES, Paths, default_jobs
from btc_assets.settings import Settings, environment, resolve_settings

DAGSTER_YAML = """\
# Written by btc-assets. The instance keeps run history and materialisations so staleness survives restarts.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: {pool_limit}  # the "wfa" pool: at most this many seeds optimise at once
"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings_of(args: argparse.Namespace) -> Settings:
    """The command's settings, resolved once: ``--home``, ``--profile``, ``--sampler`` and the source options
    over the environment and the home's settings file."""
    from btc_assets.ingestion import SourceSettings

    source = SourceSettings(
        source=getattr(args, "source", None) or "",
        ohlcv=getattr(args, "ohlcv", None) or "",
        funding=getattr(args, "funding", None) or "",
        perp=getattr(args, "perp", None) or "",
    )
    return resolve_settings(
        args.home, getattr(args, "profile", None), source=source, sampler=getattr(args, "sampler", None)
    )


def prepare_home(paths: Paths) -> Paths:
    """Create the home's folders and its Dagster instance's ``dagster.yaml`` (kept if it exists)."""
    paths.ensure()
    config = paths.dagster_home / "dagster.yaml"
    if not config.exists():
        write_text_atomic(config, DAGSTER_YAML.format(pool_limit=default_jobs()))
    return paths


def open_instance(paths: Paths):
    """The home's persistent Dagster instance."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(paths.dagster_home))


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with the resolved settings (a child resolves exactly the same ones)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BTC_ASSETS_") and k != "DAGSTER_HOME"}
    return {**keep, **environment(settings)}


def _quiet_dagster() -> None:
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def parse_seeds(text: str | None, default: int) -> list[int]:
    """``"0-29"``, ``"0,3,7"`` or ``"5"`` → seed numbers (default: 0 … default-1)."""
    from btc_assets.config import N_SEEDS

    if not text:
        return list(range(default))
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    if any(not 0 <= s < N_SEEDS for s in seeds):
        raise SystemExit(f"seeds must be in 0..{N_SEEDS - 1}: {text}")
    return sorted(set(seeds))


def all_fresh(instance, defs, keys) -> bool:
    """Whether Dagster reports every asset of ``keys`` FRESH, for ``defs`` (``btc_assets.defs.automation``)."""
    from btc_assets.defs.automation import all_fresh as fresh

    return fresh(instance, defs.resolve_asset_graph(), keys)


def run_in_process(defs, paths: Paths, job: str, options: dict):
    """Execute ``job`` in this process on the persistent instance; its result (failures are reported)."""
    with open_instance(paths) as instance:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, **options)
    if not result.success:
        _report_failure(result)
    return result


def sync_chain(defs, paths: Paths, options: dict) -> bool:
    """Re-read the raw inputs, then materialise what is not fresh in the chain up to the portfolio and everything
    below it. False (after saying why) if a step failed."""
    import dagster as dg

    from btc_assets.defs.automation import RAW, unsynced_chain

    job = defs.resolve_job_def("btc_study")
    with open_instance(paths) as instance:
        # the raw inputs are re-read every time (cheap): their content hashes tell what changed downstream
        raw = [dg.AssetKey(name) for name in RAW]
        result = job.execute_in_process(instance=instance, asset_selection=raw, **options)
        if not result.success:
            _report_failure(result)
            return False
        unsynced = unsynced_chain(instance, defs.resolve_asset_graph(), list(job.asset_layer.executable_asset_keys))
        if unsynced:
            _say(f"materialising {', '.join(k.to_user_string() for k in unsynced)}")
            result = job.execute_in_process(instance=instance, asset_selection=unsynced, **options)
            if not result.success:
                _report_failure(result)
                return False
            _say(f"done: run {result.run_id}")
        else:
            _say("the chain up to the portfolio is up to date")
    return True


def cmd_ablation(args: argparse.Namespace) -> int:
    """Bring the chain up to date, then run (or resume) the ablation's (variant, seed) partitions that are not fresh,
    then its table."""

    _quiet_dagster()
    settings = settings_of(args)
    paths, profile = prepare_home(settings.paths), settings.profile
    from btc_assets.defs import build_definitions

    defs = build_definitions(settings=settings)
    options = {
        "tags": {"btc_assets/profile": profile.name},
        "raise_on_error": False,
        "run_config": {"loggers": {"console": {"config": {"log_level": args.log_level}}}},
    }
    _say(
        f"btc-assets ablation: profile {profile.name}; variants {', '.join(profile.ablation.variants)}; "
        f"seeds {list(profile.ablation.seeds)} (set them in {paths.home / 'config.toml'}, section [ablation])"
    )
    if not sync_chain(defs, paths, options):
        return 1
    # the Gaussian-HMM regimes (the first two variants' input), then one run per (variant, seed) partition, then the
    # table over them
    import dagster as dg

    from btc_assets.defs.partitions import ablation_key

    gaussian = dg.AssetKey("gaussian_regime_probabilities")
    with open_instance(paths) as instance:
        fresh = all_fresh(instance, defs, [gaussian])
    gaussian_run = {**options, "asset_selection": [gaussian]}
    if not fresh and not run_in_process(defs, paths, "ablation_study", gaussian_run).success:
        return 1

    keys = [ablation_key(v, s) for v in profile.ablation.variants for s in profile.ablation.seeds]
    failed = launch_partitions(
        defs, settings, "ablation_runs", "ablation_oos", keys, args.jobs or default_jobs(), args.log_level, "run"
    )
    if failed:
        _say(f"FAILED ablation runs: {', '.join(map(str, failed))}; run the same command again to resume them")
        return 1
    table_keys = [dg.AssetKey("ablation"), dg.AssetKey("ablation_seeds")]
    with open_instance(paths) as instance:
        fresh = all_fresh(instance, defs, table_keys)
    if fresh:  # every run was already done and the table made from them: read it back
        from btc_assets.storage import Warehouse

        _say("the ablation table is up to date")
        table = Warehouse(paths.warehouse).read("ablation")
    else:
        result = run_in_process(defs, paths, "ablation_study", {**options, "asset_selection": table_keys})
        if not result.success:
            return 1
        table = result.output_for_node("ablation", "ablation")
    from btc_assets.evaluation.ablation import SHOWN

    print(table[[c for c in SHOWN if c in table]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _say(f"chart: {paths.reports / 'ablation.png'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Materialise what is unsynced in the chain, then launch (or resume) every seed not yet done."""

    _quiet_dagster()
    settings = settings_of(args)
    paths, profile = prepare_home(settings.paths), settings.profile
    from btc_assets.defs import build_definitions

    defs = build_definitions(settings=settings)
    _say(
        f"btc-assets run: profile {profile.name} ({profile.description}); sampler {profile.wfa.sampler}; "
        f"home {paths.home}" + (f"; settings file {settings.settings_file}" if settings.settings_file else "")
    )
    options = {
        "tags": {"btc_assets/profile": profile.name},
        "raise_on_error": False,
        "run_config": {"loggers": {"console": {"config": {"log_level": args.log_level}}}},
    }
    if not sync_chain(defs, paths, options):
        return 1
    seeds = parse_seeds(args.seeds, profile.n_seeds)
    failed = launch_seeds(defs, settings, seeds, args.jobs or default_jobs(), args.log_level)
    if failed:
        _say(f"FAILED seeds: {', '.join(failed)}; run the same command again to resume them")
        return 1
    if not summarise(defs, paths, options):
        return 1
    _say(f"summary across seeds: {paths.warehouse / 'wfa_summary'}; charts in {paths.reports}")
    _say(
        f'query it: btc-assets sql "SELECT count(*) FROM market_bars"  (warehouse {paths.warehouse}); '
        "progress: btc-assets status"
    )
    return 0


def summarise(defs, paths: Paths, options: dict) -> bool:
    """Run ``summarise_seeds`` unless each of its assets is FRESH (no seed, setting or code changed since it ran);
    False if the run failed."""
    keys = list(defs.resolve_job_def("summarise_seeds").asset_layer.executable_asset_keys)
    with open_instance(paths) as instance:
        fresh = all_fresh(instance, defs, keys)
    if fresh:
        _say("the summary is up to date")
        return True
    return run_in_process(defs, paths, "summarise_seeds", options).success


def _report_failure(result) -> None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            _say(f"FAILED {event.step_key}: {event.step_failure_data.error.message.strip()}")


def pool_limit(instance, pool: str) -> int | None:
    """The instance's concurrency limit for ``pool``: its own limit if set, else ``concurrency.pools.default_limit``
    (None: unlimited)."""
    for limit in instance.event_log_storage.get_pool_limits():
        if limit.name == pool and not limit.from_default:
            return int(limit.limit)
    default = instance.global_op_concurrency_default_limit
    return None if default is None else int(default)


def ensure_pool(instance, pool: str) -> None:
    """Create ``pool``'s row (with the instance's default limit) before several runs claim it at once: Dagster 1.13
    creates it at a run's first claim, and on PostgreSQL two first claims at the same moment collide on its unique
    key and the second run fails (seen with two seeds on a fresh instance)."""
    storage = instance.event_log_storage
    if instance.global_op_concurrency_default_limit is None or any(p.name == pool for p in storage.get_pool_limits()):
        return
    try:
        storage.initialize_concurrency_limit_to_default(pool)
    except Exception:  # another machine created it at the same moment: fine if it is there now
        if not any(p.name == pool for p in storage.get_pool_limits()):
            raise


def launch_partitions(
    defs, settings: Settings, job: str, asset: str, keys: list[str], jobs: int, log_level: str, what: str = "seed"
) -> list[str]:
    """One run per partition of ``job`` in ``jobs`` worker processes, each running its partitions one after the
    other (:func:`cmd_seed` with no partition: the keys come on its standard input, one result line per key on the
    file descriptor ``--report-fd``); partitions whose ``asset`` is fresh are skipped. A worker pays its start-up
    (imports, definitions, the instance) once instead of once per partition. Fault isolation: a run that fails
    fails that partition only, and a worker that dies (a crash, a kill) takes only the partition it was running;
    the next ones go to a fresh worker. Each child resolves the same settings (:func:`child_environment`). Returns
    the partitions that failed. The seeds (``wfa_seeds``) and the ablation's runs (``ablation_runs``) both go this
    way."""
    import subprocess
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from btc_assets.defs.automation import stale_partitions

    with open_instance(settings.paths) as instance:
        todo = stale_partitions(instance, defs.resolve_asset_graph(), asset, keys)  # as the UI's sensor decides
        ensure_pool(instance, "wfa")
        limit = pool_limit(instance, "wfa")
    if limit is not None and jobs > limit:
        # the instance's pool is enforced by Dagster too, but its slot claims on SQLite can race when two runs claim
        # within milliseconds (observed): never launch more at once than the pool allows
        _say(f"the instance's pool 'wfa' allows {limit} {what}(s) at once: --jobs {jobs} lowered to {limit}")
        jobs = limit
    skipped = [k for k in keys if k not in todo]
    if skipped:
        _say(f"{len(skipped)} {what}(s) already done and up to date, skipped: {', '.join(map(str, skipped))}")
    if not todo:
        return []
    _say(f"optimising {len(todo)} {what}(s), {jobs} at a time: {', '.join(map(str, todo))}")
    env = child_environment(settings)
    queue = iter(todo)
    lock = threading.Lock()
    failed: list[str] = []

    def start() -> tuple[subprocess.Popen, object]:
        read, write = os.pipe()
        argv = [sys.executable, "-m", "btc_assets", "--home", str(settings.paths.home), "seed", "--job", job,
                "--profile", settings.profile.name, "--log-level", log_level, "--report-fd", str(write)]  # fmt: skip
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, text=True, pass_fds=(write,))
        os.close(write)
        return proc, os.fdopen(read, "r")

    def worker() -> None:
        proc = report = None
        try:
            while True:
                with lock:
                    key = next(queue, None)
                if key is None:
                    return
                if proc is None:
                    proc, report = start()
                try:
                    proc.stdin.write(f"{key}\n")
                    proc.stdin.flush()
                    line = report.readline()
                except BrokenPipeError:
                    line = ""
                if line.strip() != f"ok {key}":
                    failed.append(key)
                if not line:  # the worker died: the next partition gets a fresh one
                    proc.wait()
                    report.close()
                    proc = report = None
        finally:
            if proc is not None:
                proc.stdin.close()
                proc.wait()
                report.close()

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done in [pool.submit(worker) for _ in range(max(1, min(jobs, len(todo))))]:
            done.result()
    return [key for key in todo if key in failed]


def launch_seeds(defs, settings: Settings, seeds: list[int], jobs: int, log_level: str) -> list[str]:
    """The seed partitions of ``wfa_seeds`` (:func:`launch_partitions`)."""
    from btc_assets.config import seed_key

    keys = [seed_key(s) for s in seeds]
    return launch_partitions(defs, settings, "wfa_seeds", "wfa_results", keys, jobs, log_level)


def cmd_seed(args: argparse.Namespace) -> int:
    """Materialise partitions of a partitioned job in this process: seeds of ``wfa_seeds`` (the walk-forward
    optimisation of that seed) or ``variant|seed`` keys of ``ablation_runs``. One partition when given; else a
    worker of :func:`launch_partitions`: a key per line of standard input, one run each, in turn, and ``ok KEY`` or
    ``failed KEY`` written to ``--report-fd`` after each."""
    _quiet_dagster()
    settings = settings_of(args)
    paths, profile = prepare_home(settings.paths), settings.profile
    from btc_assets.defs import build_definitions

    job = build_definitions(settings=settings).resolve_job_def(args.job)
    keys = [args.partition] if args.partition else (line.strip() for line in sys.stdin if line.strip())
    report = os.fdopen(args.report_fd, "w", buffering=1) if args.report_fd is not None else None
    failures = 0
    with open_instance(paths) as instance:
        for key in keys:
            try:
                result = job.execute_in_process(
                    instance=instance,
                    partition_key=key,
                    tags={"btc_assets/profile": profile.name},
                    run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}},
                    raise_on_error=False,
                )
            except Exception as err:  # no run at all (e.g. an unknown partition key): this key fails, the next runs
                _say(f"FAILED {key}: {err}")
                result = None
            ok = result is not None and result.success
            failures += not ok
            if report is not None:  # first: a worker killed after its run succeeded must not report it failed
                report.write(f"{'ok' if ok else 'failed'} {key}\n")
            if ok:
                _say(f"{key}: done{_trial_counts(result)} (run {result.run_id})")
            elif result is not None:
                _report_failure(result)
    return 1 if failures else 0


def _trial_counts(result) -> str:
    """``, 1,500 trials run now, 19,500 from checkpoint`` from a seed run's materialisation metadata ("" if none)."""
    for event in result.get_asset_materialization_events():
        meta = event.event_specific_data.materialization.metadata
        if "trials_run_now" in meta and "trials_from_checkpoint" in meta:
            now, before = meta["trials_run_now"].value, meta["trials_from_checkpoint"].value
            return f", {now:,} trials run now, {before:,} from checkpoint"
    return ""


def cmd_status(args: argparse.Namespace) -> int:
    """Every seed's state: materialised or not, and its latest progress record (fold, phase, trial, ETA)."""
    from btc_assets.config import N_SEEDS, seed_key
    from btc_assets.wfa import read_progress

    paths = resolve_settings(args.home).paths
    progress = read_progress(paths.checkpoints)
    rows = []
    for i in range(N_SEEDS):
        key = seed_key(i)
        p = progress.get(key)
        if p is None:
            rows.append(f"{key}  not started")
            continue
        eta = p.get("eta_s")
        best = p.get("best")
        rows.append(
            f"{key}  {p['state']:<8} fold {p['fold_position']}/{p['n_folds']}  phase {p['phase'] + 1}/{p['n_phases']}  "
            f"trial {p['trial']}/{p['n_trials']}  ({p['trials_done']}/{p['trials_total']} trials)  "
            f"best {'-' if best is None else f'{best:.4f}'}  "
            f"ETA {'-' if eta is None else f'{eta / 60:.1f} min'}  updated {p['updated_at']}"
        )
    print("\n".join(rows))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start ``dagster dev`` on this project with the same persistent instance."""
    settings = settings_of(args)
    paths = prepare_home(settings.paths)
    argv = [sys.executable, "-m", "dagster", "dev", "-m", "btc_assets.defs", "-h", args.host, "-p", str(args.port)]
    _say(f"btc-assets ui: DAGSTER_HOME={paths.dagster_home}; open http://{args.host}:{args.port}")
    from btc_assets.dev_server import run_dagster_dev

    # the code server resolves the same settings from the environment; Ctrl-C / SIGTERM stop it all within 10 s
    return run_dagster_dev(argv, env=child_environment(settings))


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

    settings = resolve_settings(args.home)
    paths = prepare_home(settings.paths)
    if args.via == "ccxt":
        symbol = args.symbol if "/" in args.symbol else f"{args.symbol[:-4]}/{args.symbol[-4:]}"
        result = download.download_ccxt(
            paths.raw, symbol=symbol, perp_symbol=f"{symbol}:{symbol.split('/')[1]}", progress=_say, perp=True
        )
    else:
        result = download.download_binance_archive(
            paths.raw / "binance",
            base_url=settings.source.binance_url or None,
            symbol=args.symbol,
            start=args.start,
            end=args.end,
            progress=_say,
            perp=True,
        )
    _say(f"done: {result.fetched} fetched, {result.cached} already cached, {len(result.missing)} not published")
    files = ",".join(str(p) for p in result.ohlcv_files)
    print(
        f"{len(result.ohlcv_files)} kline file(s), {len(result.perp_files)} perp kline file(s), "
        f"{len(result.funding_files)} funding file(s) under {paths.raw}"
    )
    if files:
        print("use them: BTC_ASSETS_SOURCE=download btc-assets run")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Query the warehouse with DuckDB (in-memory views over the Parquet files; nothing is locked)."""
    from btc_assets.storage import Warehouse

    paths = resolve_settings(args.home).paths
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


def cmd_report(args: argparse.Namespace) -> int:
    """Write ``reports/report.html``: the summary table, target and overfitting figures and every chart."""
    import json

    from btc_assets.evaluation.report import render_report
    from btc_assets.storage import Warehouse

    paths = resolve_settings(args.home).paths.ensure()
    warehouse = Warehouse(paths.warehouse)
    tables = warehouse.tables()
    summary = warehouse.read("wfa_summary") if "wfa_summary" in tables else None
    attribution = warehouse.read("wfa_attribution") if "wfa_attribution" in tables else None
    facts_file = paths.reports / "summary.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    out = render_report(paths.reports, summary, facts, attribution=attribution)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="btc-assets", description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="state folder (default: $BTC_ASSETS_HOME or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    def source_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", choices=["demo", "files", "download"], help="market data source")
        p.add_argument("--ohlcv", help="OHLCV file(s) or glob(s), comma separated (implies --source files)")
        p.add_argument("--funding", help="funding file(s) or glob(s), comma separated")
        p.add_argument("--perp", help="the perpetual's own OHLCV file(s) or glob(s), comma separated (optional)")

    run = sub.add_parser("run", help="materialise the whole asset graph in the persistent instance")
    run.add_argument("--profile", choices=list(PROFILES), default=None, help="study size (default quick)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--seeds", help="seed partitions to optimise, e.g. 0-29 or 0,3,7 (default: the profile's)")
    run.add_argument("--jobs", type=int, default=0, help="seeds at once (default: number of cores)")
    run.add_argument(
        "--sampler",
        choices=["tpe", "cmaes", "random"],
        help="walk-forward sampler (default: the profile's; also BTC_ASSETS_SAMPLER)",
    )
    source_options(run)
    run.set_defaults(func=cmd_run)

    seed = sub.add_parser("seed", help="materialise seed partitions (walk-forward optimisation) here")
    seed.add_argument(
        "partition",
        nargs="?",
        help="seed_00 … seed_29 (for --job ablation_runs: seed_00|original …); none: one key per line of stdin",
    )
    seed.add_argument("--report-fd", type=int, default=None, help=argparse.SUPPRESS)
    seed.add_argument("--job", default="wfa_seeds", choices=["wfa_seeds", "ablation_runs"])
    seed.add_argument("--profile", choices=list(PROFILES), default=None)
    seed.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    seed.set_defaults(func=cmd_seed)

    report = sub.add_parser("report", help="write the self-contained HTML report (reports/report.html)")
    report.set_defaults(func=cmd_report)

    status = sub.add_parser("status", help="every seed's progress (fold, phase, trial, best, ETA)")
    status.set_defaults(func=cmd_status)

    abl = sub.add_parser("ablation", help="the ablation: every variant's walk-forward on the configured seeds")
    abl.add_argument("--profile", choices=list(PROFILES), default=None, help="study size (default quick)")
    abl.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    abl.add_argument("--jobs", type=int, default=0, help="runs at once (default: number of cores)")
    source_options(abl)
    abl.set_defaults(func=cmd_ablation)

    ui = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on the same instance")
    ui.add_argument("--profile", choices=list(PROFILES), default=None, help="study size (default quick)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    source_options(ui)
    ui.set_defaults(func=cmd_ui)

    ingest = sub.add_parser("ingest", help="validate OHLCV / funding files; non-zero exit on bad input")
    ingest.add_argument("files", nargs="+", type=Path)
    ingest.set_defaults(func=cmd_ingest)

    dl = sub.add_parser("download", help="download real BTCUSDT spot and perp klines and funding into raw/")
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
