"""Ingestion assets: raw spot OHLCV, perp OHLCV and funding (content-hash data versions) and the clean hourly
grid, with freshness checks on how old their newest bar may be."""

import warnings
from datetime import timedelta

import dagster as dg
import pandas as pd

from btc_assets import ingestion
from btc_assets.defs.resources import MarketSource, ProjectHome

GROUP = "ingestion"
# asset → (the modules that compute it, the settings sections it reads): its code version (btc_assets.versions)
COMPUTED_BY = {
    name: (("btc_assets.ingestion",), ()) for name in ("raw_ohlcv", "raw_funding", "raw_perp_ohlcv", "market_bars")
}


# How old the newest bar may be before the data are overdue (the freshness checks below). Binance's archive
# publishes a day's spot and perp klines the next day, funding only as whole months (the current month's settlements
# arrive early in the next one), so a current download is at most 48 hours (bars) and ~40 days (funding) behind.
MAX_AGE = {
    "raw_ohlcv": timedelta(hours=48),
    "raw_perp_ohlcv": timedelta(hours=48),
    "market_bars": timedelta(hours=48),
    "raw_funding": timedelta(days=40),
}
LAST_UPDATED = "dagster/last_updated_timestamp"  # what Dagster's freshness checks read as the asset's update time


def newest_bar(ts: pd.Series, period: pd.Timedelta) -> dict[str, dg.MetadataValue]:
    """The freshness checks' "last updated" time: when the newest bar (or settlement) closed; nothing when empty
    (no data is not overdue data)."""
    if not len(ts):
        return {}
    return {LAST_UPDATED: dg.MetadataValue.timestamp((ts.iloc[-1] + period).to_pydatetime())}


def _raw_output(
    context: dg.AssetExecutionContext,
    loaded: ingestion.Loaded,
    what: str,
    source: str,
    extra: dict[str, object] | None = None,
) -> dg.Output:
    frame = loaded.frame
    version = ingestion.frame_hash(frame)
    for line in loaded.repairs:
        context.log.warning(line)
    ts = frame["timestamp"]
    return dg.Output(
        frame,
        data_version=dg.DataVersion(version[:24]),
        metadata={
            "source": source,
            "files": dg.MetadataValue.md(
                "\n".join(f"- `{r.file}`: {r.rows_in} rows in, {r.rows_out} kept" for r in loaded.reports) or "-"
            ),
            "repairs": dg.MetadataValue.md("\n".join(f"- {r}" for r in loaded.repairs) or "none"),
            "first": str(ts.iloc[0]) if len(ts) else "-",
            "last": str(ts.iloc[-1]) if len(ts) else "-",
            "content_hash": version,
            "what": what,
            **newest_bar(ts, pd.Timedelta(0) if what == "funding" else pd.Timedelta(hours=1)),
            **(extra or {}),
        },
    )


@dg.asset(group_name=GROUP, kinds={"python", "parquet"})
def raw_ohlcv(context: dg.AssetExecutionContext, project: ProjectHome, market_source: MarketSource) -> dg.Output:
    """Hourly OHLCV bars as the source delivers them, validated (bad input fails with file, row and rule).

    The data version is a content hash of the validated bars, so re-reading unchanged input leaves everything
    downstream up to date and changed input makes it stale.
    """
    settings = market_source.settings()
    context.log.info(f"market data source: {settings.describe()}")
    loaded = ingestion.load_market_ohlcv(settings, project.paths.raw, progress=context.log.info)
    return _raw_output(context, loaded, "ohlcv", settings.describe())


@dg.asset(group_name=GROUP, kinds={"python", "parquet"})
def raw_funding(context: dg.AssetExecutionContext, project: ProjectHome, market_source: MarketSource) -> dg.Output:
    """Perpetual funding settlements (rate per interval, settlement time on the hour), validated.

    Empty when the source has no funding (spot-only files); data version = content hash, as for ``raw_ohlcv``.
    """
    settings = market_source.settings()
    loaded = ingestion.load_market_funding(settings, project.paths.raw, progress=context.log.info)
    return _raw_output(context, loaded, "funding", settings.describe())


@dg.asset(group_name=GROUP, kinds={"python", "parquet"})
def raw_perp_ohlcv(context: dg.AssetExecutionContext, project: ProjectHome, market_source: MarketSource) -> dg.Output:
    """The perpetual's own hourly OHLCV bars, validated with the spot rules (bad input fails with file, row and
    rule) plus the perp rules: the listing placeholder and no-trade bars (flat, no volume) are flagged, with their
    rows, and left out, so nothing prices or trades on them.

    Empty when the source has no perp bars (no ``BTC_ASSETS_PERP`` / ``market_source.perp`` file); data version =
    content hash, as for ``raw_ohlcv``.
    """
    settings = market_source.settings()
    loaded = ingestion.load_market_perp(settings, project.paths.raw, progress=context.log.info)
    flagged = {rule: len(rows) for report in loaded.reports for rule, rows in report.flagged.items()}
    return _raw_output(
        context,
        loaded,
        "perp_ohlcv",
        settings.describe(),
        extra={
            "flagged_bars": sum(flagged.values()),
            "flagged": dg.MetadataValue.md(
                "\n".join(f"- `{rule}`: {n} bar(s)" for rule, n in flagged.items()) or "none"
            ),
        },
    )


@dg.asset(group_name=GROUP, kinds={"python", "parquet"})
def market_bars(
    context: dg.AssetExecutionContext, raw_ohlcv: pd.DataFrame, raw_funding: pd.DataFrame, raw_perp_ohlcv: pd.DataFrame
) -> dg.Output:
    """The clean hourly UTC grid: every hour present, missing exchange hours flagged (prices NaN, never invented),
    funding rate and payment time on the bar that closes at each settlement, and the perpetual's own bar on the
    same hour (``perp_open`` … ``perp_close``; NaN where no perp price is known: before its listing, its missing
    hours, its flagged placeholder / no-trade bars, or everywhere without perp input)."""
    built = ingestion.build_market_bars(raw_ohlcv, raw_funding, raw_perp_ohlcv)
    bars, gaps = built.bars, built.gaps
    if built.funding_outside_bars:
        context.log.info(f"{built.funding_outside_bars} funding settlement(s) fall outside the bar range")
    if built.perp_outside_bars:
        context.log.info(f"{built.perp_outside_bars} perp bar(s) fall outside the spot bar range (dropped)")
    perp_known = bars["perp_close"].notna()
    largest = gaps.sort_values("hours", ascending=False).head(10)
    return dg.Output(
        bars,
        metadata={
            "hours": len(bars),
            "missing_hours": int(bars["missing"].sum()),
            "gaps": len(gaps),
            "largest_gaps": dg.MetadataValue.md(largest.to_markdown(index=False) if len(gaps) else "no gaps"),
            "funding_settlements": int(bars["funding_time"].notna().sum()),
            "funding_known_share": float(bars["funding_known"].mean()),
            "first": str(bars["timestamp"].iloc[0]),
            "last": str(bars["timestamp"].iloc[-1]),
            "perp_bars_known": int(perp_known.sum()),
            "first_perp_bar": str(bars.loc[perp_known, "timestamp"].iloc[0]) if perp_known.any() else "-",
            "perp_outside_bars": built.perp_outside_bars,
            **newest_bar(bars["timestamp"], pd.Timedelta(hours=1)),
        },
    )


assets = [raw_ohlcv, raw_funding, raw_perp_ohlcv, market_bars]
# each asset's check fails (severity WARN: overdue, shown on the asset in the UI) when its newest bar closed longer ago
# than MAX_AGE; evaluated by every run that materialises it and, with the sensor on, as time passes. Dagster 1.13
# calls these checks superseded by FreshnessPolicy, but a FreshnessPolicy measures the time since the last
# materialisation only, while these read the data's own time (LAST_UPDATED): re-reading a file that stopped growing
# must not look fresh.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    freshness_checks = [
        check
        for name, age in MAX_AGE.items()
        for check in dg.build_last_update_freshness_checks(assets=[dg.AssetKey(name)], lower_bound_delta=age)
    ]
    freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks, name="data_freshness", default_status=dg.DefaultSensorStatus.STOPPED
    )
