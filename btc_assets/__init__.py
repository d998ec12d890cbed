"""btc-assets: a research pipeline for BTC algorithmic trading, built as Dagster software-defined assets.

The stages of the chain are plain modules (``btc_assets.ingestion``, ...) that know nothing of Dagster;
``btc_assets.defs`` wires them into assets and ``btc_assets.cli`` is the command line.
"""

__version__ = "0.1.0"
