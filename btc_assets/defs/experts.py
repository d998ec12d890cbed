"""Expert signals asset: each expert's target position per bar from causal inputs."""

import dataclasses

import dagster as dg
import pandas as pd

from btc_assets import experts
from btc_assets.defs.resources import Study

GROUP = "experts"
COMPUTED_BY = {"expert_signals": (("btc_assets.experts",), ("experts",))}


@dg.asset(group_name=GROUP, kinds={"python", "numba", "parquet"})
def expert_signals(context: dg.AssetExecutionContext, study: Study, market_bars: pd.DataFrame) -> dg.Output:
    """Target position in [-1, 1] per hourly bar for each expert (default parameters, ``[experts.defaults]``
    over the classes'; the walk-forward optimiser searches their ranges): Ichimoku trend, RSI/Bollinger mean
    reversion, Donchian/ATR breakout and funding carry (a market-neutral leg: negative = short perpetual + long
    spot). Computed from data up to each bar's close; the portfolio executes one bar later."""
    bars = experts.BarArrays.from_market_bars(market_bars)
    configs = experts.configured(study.profile.experts)
    positions = experts.expert_positions(bars, configs)
    out = pd.DataFrame(positions, columns=list(experts.EXPERT_NAMES))
    out.insert(0, "timestamp", market_bars["timestamp"].to_numpy())
    shares = pd.DataFrame(
        {
            "long": (out[list(experts.EXPERT_NAMES)] > 0).mean(),
            "short": (out[list(experts.EXPERT_NAMES)] < 0).mean(),
            "flat": (out[list(experts.EXPERT_NAMES)] == 0).mean(),
        }
    )
    return dg.Output(
        out,
        metadata={
            "time_in_market": dg.MetadataValue.md(shares.to_markdown(floatfmt=".3f")),
            "configs": dg.MetadataValue.json(
                {f.name: dataclasses.asdict(getattr(configs, f.name)) for f in dataclasses.fields(configs)}
            ),
        },
    )


assets = [expert_signals]
