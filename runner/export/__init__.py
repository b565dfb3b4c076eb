"""``streamrun export``: results as a Parquet file or a Hugging Face dataset, one row per record.

``streamrun export RESULTS... --to parquet|hf-dataset OUT [--inputs IN ...]``

Why it exists: results files are JSON lines made for appending and
resuming; analysis wants a columnar file with one fixed schema that DuckDB,
pandas, Polars and ``datasets`` read as they are, with each record's
prompt beside its answer.

The package follows the data, one module a step::

    schema    the fixed schema (its docstring describes each column), a
              record as one row of cells, JSON text for nested fields
    join      the inputs index: a record's input line by custom_id
              (``--inputs``), 24 bytes an input line
    write     the argument checks, rows streamed into Parquet row groups,
              the file or the saved Hugging Face dataset put at OUT
    packages  pyarrow and datasets, optional: loaded when used, a missing
              one a usage error that says what to install
    command   the click command wiring them

This module re-exports what the CLI (``runner.cli.export``), the tests and
users import. Importing it loads neither pyarrow nor datasets.
"""

from __future__ import annotations

from .join import InputIndex
from .packages import MissingPackage
from .schema import (
    INPUT_COLUMNS,
    JSON_COLUMNS,
    METADATA_KEY,
    SCHEMA_VERSION,
    export_schema,
    prompt_of,
    record_row,
    to_json,
)
from .write import (
    BATCH_BYTES,
    FORMATS,
    HF_DATASET,
    PARQUET,
    ROW_GROUP_SIZE,
    ExportError,
    ExportReport,
    NoRows,
    export,
    usage_problem,
    write_parquet,
)

__all__ = [
    "BATCH_BYTES",
    "FORMATS",
    "HF_DATASET",
    "INPUT_COLUMNS",
    "JSON_COLUMNS",
    "METADATA_KEY",
    "PARQUET",
    "ROW_GROUP_SIZE",
    "SCHEMA_VERSION",
    "ExportError",
    "ExportReport",
    "InputIndex",
    "MissingPackage",
    "NoRows",
    "export",
    "export_schema",
    "prompt_of",
    "record_row",
    "to_json",
    "usage_problem",
    "write_parquet",
]
