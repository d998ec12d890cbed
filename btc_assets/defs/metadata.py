"""Metadata a person reads in the UI: frames as Dagster table metadata (sortable, typed columns)."""

import math

import dagster as dg
import pandas as pd


def table_metadata(frame: pd.DataFrame, digits: int | None = None) -> dg.TableMetadataValue:
    """A frame as Dagster table metadata (numbers as floats, rounded to ``digits`` when given, NaN as an empty
    cell; the rest as text)."""
    columns, records = [], []
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    for c in frame.columns:
        columns.append(dg.TableColumn(str(c), "float" if numeric[c] else "string"))
    for row in frame.itertuples(index=False):
        records.append(
            dg.TableRecord(
                {
                    str(c): (_number(v, digits) if numeric[c] else str(v))
                    for c, v in zip(frame.columns, row, strict=True)
                }
            )
        )
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


def _number(value: object, digits: int | None) -> float | None:
    x = float(value)  # type: ignore[arg-type]
    if math.isnan(x):
        return None
    return round(x, digits) if digits is not None else x
