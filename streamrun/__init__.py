"""streamrun's Python API: `import streamrun`, then `streamrun.run(...)` or `async for r in streamrun.stream(...)`.

The implementation lives in the `runner` package (runner/api.py); this name
is the one users import.  See docs/python-api.md.
"""

from runner.api import Record, RunConfig, arun, config, run, stream
from runner.errors import OutputLocked, RunError, UsageError
from runner.outputs.writer import OutputExists

__all__ = ["run", "arun", "stream", "config", "RunConfig", "Record", "RunError", "UsageError", "OutputExists",
           "OutputLocked"]
