"""Results from one output format into the other, final records only (`streamrun convert`)."""

from __future__ import annotations

import sys
from typing import IO, Any

import orjson

from ..record import Record, decode_native
from ..stream.paths import CHAT_PATH
from .batch import OPENAI_BATCH, STREAMRUN, decode_batch, detect_format, encode_batch
from .finals import FinalRecords


def convert_stream(src: IO[bytes], dst: IO[bytes], to: str, name: str,
                   request_url: str = CHAT_PATH) -> tuple[int, int, int]:
    """Convert line by line; returns (lines written, bad lines, superseded records left out).

    Lines already in the target format are checked and copied unchanged. A
    bad line is reported on stderr as ``name:line`` and skipped. Only final
    records are converted (``runner.outputs.finals``): a failed record that a rerun's
    record superseded is left out.
    """
    fmt = STREAMRUN  # the format of the line decoded last, which is the one yielded next

    def decode(obj: Any) -> Record:
        nonlocal fmt
        fmt = detect_format(obj)
        return decode_batch(obj) if fmt == OPENAI_BATCH else decode_native(obj)  # checked either way

    written = 0
    with FinalRecords(src, name=name, warn=lambda m: print(m, file=sys.stderr, flush=True), prefix="convert: ",
                      verb="skipped, ", decode=decode) as reader:
        for _, raw, record in reader:
            if fmt != to:
                raw = orjson.dumps(encode_batch(record, request_url) if to == OPENAI_BATCH else record)
            dst.write(raw + b"\n")
            written += 1
    return written, reader.bad_lines, reader.superseded
