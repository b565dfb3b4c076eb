"""Ids: the one place that hashes them, for done-sets (resume), duplicate checks and shards.

Hashes are 64-bit BLAKE2b of the UTF-8 id, never ``hash()`` (salted per
process).  Sets of millions of ids are sorted arrays of those hashes, 8 bytes
each, so memory stays flat on the largest inputs.

Shards split one input set across N independent workers by ``custom_id``.

Every worker reads *all* inputs and keeps the lines whose id hashes to its
shard. No coordination is needed, and because the shard depends only on the
id and the shard count, a worker that is restarted, or inputs that gain new
lines, never move an existing id to another shard: a re-run of shard 3 finds
its old results and resumes.

The index and count come from ``--shard I/N`` or, inside a batch scheduler,
from the environment (see :func:`shard_from_env`). The CLI gives ``--shard``
precedence over the environment.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

# Kubernetes Indexed Job: the control plane sets the index only.
K8S_INDEX = "JOB_COMPLETION_INDEX"
# Kubernetes does not export .spec.completions to the pod, so the manifest
# must pass the count itself.
K8S_COUNT = "STREAMRUN_SHARD_COUNT"
SLURM_ID = "SLURM_ARRAY_TASK_ID"
SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
SLURM_STEP = "SLURM_ARRAY_TASK_STEP"


def shard_of(custom_id: str, count: int) -> int:
    """The shard (0..count-1) that owns ``custom_id``.

    Uses the first 8 bytes of BLAKE2b over the UTF-8 id, big-endian, modulo
    ``count``. Never ``hash()``: that is salted per process, so two workers
    would disagree about who owns what. Changing this function moves ids
    between shards and breaks resuming old sharded runs; the tests pin a few
    values so that it cannot change by accident.
    """
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    return int.from_bytes(_digest(custom_id), "big") % count


def _digest(custom_id: str) -> bytes:
    return hashlib.blake2b(custom_id.encode("utf-8"), digest_size=8).digest()


def line_hash(raw: bytes) -> str:
    """A record's `request_hash`: 16 hex digits of the input line as read (surrounding blanks aside)."""
    return hashlib.blake2b(raw.strip(), digest_size=8).hexdigest()


def id_hash(custom_id: str) -> int:
    """A stable 64-bit fingerprint: sets of millions of ids then cost 8 bytes each."""
    return int.from_bytes(_digest(custom_id), "little")


class HashSorter:
    """Collects 64-bit hashes and sorts them without a list of a million Python ints.

    Sorting an array via `sorted()` materialises every value as an int object
    (~70 MB per million); bucketing by the top byte keeps that to 1/256 at a
    time, so the peak stays near the 8 bytes per hash the array itself costs.
    """

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]
        self.count = 0

    def add(self, h: int) -> None:
        self._buckets[h >> 56].append(h)
        self.count += 1

    def sorted(self) -> array:
        out = array("Q")
        for bucket in self._buckets:
            out.extend(sorted(bucket))
        self._buckets = []
        return out


class DoneIds:
    """Ids already answered, as sorted 64-bit hashes: 8 bytes each, so 1 M ids cost 8 MB.

    `resend`: the keys whose final record is an error that a rerun sends again (runner/outputs/writer.py);
    `if_changed`: those among the done whose failure only a changed line can change, which
    `reopen` takes out of the done when their line did change.
    """

    def __init__(self, hashes: HashSorter, answered: HashSorter | None = None, *,
                 resend: HashSorter | None = None, if_changed: HashSorter | None = None) -> None:
        self._h = hashes.sorted()
        # (key, request_hash) of each record, 8 more bytes a record: which line was answered
        self._answered = answered.sorted() if answered is not None else None
        self._resend = resend.sorted() if resend is not None else array("Q")
        self._if_changed = if_changed.sorted() if if_changed is not None else array("Q")
        self._reopened: set[int] = set()  # a few: the failed lines that were fixed since

    def __len__(self) -> int:
        return len(self._h) - len(self._reopened)

    def __contains__(self, key: str) -> bool:
        h = id_hash(key)
        return sorted_has(self._h, h) and h not in self._reopened

    def resent(self, key: str) -> bool:
        """The key's final record is an error that this run sends again."""
        return sorted_has(self._resend, id_hash(key))

    def reopen(self, key: str) -> bool:
        """Send the key again if its failure is one only a changed line can change; whether it was."""
        h = id_hash(key)
        if not sorted_has(self._if_changed, h):
            return False
        self._reopened.add(h)
        return True

    def changed(self, key: str, request_hash: str) -> bool:
        """The id was answered, but for another line than `request_hash` (the input changed since).

        Records written before request hashes existed are never called changed.
        """
        if self._answered is None or key not in self:
            return False
        return not (sorted_has(self._answered, id_hash(answered_key(key, request_hash)))
                    or sorted_has(self._answered, id_hash(answered_key(key, None))))


def answered_key(key: str, request_hash: str | None) -> str:
    return f"{key}\x00{request_hash or '?'}"


def sorted_has(values: array, h: int) -> bool:
    """Whether the sorted array of hashes holds `h`."""
    i = bisect_left(values, h)
    return i < len(values) and values[i] == h


def resume_key(label: str | None, custom_id: str) -> str:
    """Sweeps send the same ids once per stage, so the stage label is part of the key (`Record.key`)."""
    return f"{label}\x00{custom_id}" if label else custom_id


class SeenIds:
    """Duplicate detection for stdin, which cannot be scanned ahead."""

    def __init__(self) -> None:
        self._first: dict[int, str] = {}

    def check(self, custom_id: str, place: str) -> str | None:
        h = id_hash(custom_id)
        earlier = self._first.get(h)
        if earlier is None:
            self._first[h] = place
        return earlier


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index must be in 0..{self.count - 1} (0-based), got {self.index}"
            )

    def owns(self, custom_id: str) -> bool:
        """True when this shard must run the input with ``custom_id``."""
        return shard_of(custom_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse ``"I/N"`` (0-based index I of N shards), e.g. ``"2/8"``."""
    index_s, sep, count_s = text.strip().partition("/")
    if not sep:
        raise ValueError(f"shard must look like I/N (e.g. 2/8), got {text!r}")
    try:
        index, count = int(index_s), int(count_s)
    except ValueError:
        raise ValueError(
            f"shard must be two integers I/N (e.g. 2/8), got {text!r}"
        ) from None
    if count < 1:
        raise ValueError(f"shard count N must be >= 1, got {text!r}")
    if not 0 <= index < count:
        raise ValueError(
            f"shard index I is 0-based and must be in 0..{count - 1}, got {text!r}"
        )
    return Shard(index, count)


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    """The integer value of ``name``, None when unset or empty."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _from_kubernetes(environ: Mapping[str, str], index: int) -> Shard:
    count = _env_int(environ, K8S_COUNT)
    if count is None:
        raise ValueError(
            f"{K8S_INDEX} is set (Kubernetes Indexed Job) but {K8S_COUNT} is not: "
            f"Kubernetes does not tell the pod the completion count, so set "
            f"{K8S_COUNT} in the pod template's env to the same value as "
            f".spec.completions (or pass --shard I/N)"
        )
    return _checked(index, count, f"{K8S_INDEX}={index}, {K8S_COUNT}={count}")


def _from_slurm(environ: Mapping[str, str], task_id: int) -> Shard:
    count = _env_int(environ, SLURM_COUNT)
    if count is None:
        raise ValueError(
            f"{SLURM_ID} is set (Slurm job array) but {SLURM_COUNT} is not: "
            f"export {SLURM_COUNT} (the number of tasks in the array) "
            f"or pass --shard I/N"
        )
    low = _env_int(environ, SLURM_MIN) or 0
    step = _env_int(environ, SLURM_STEP) or 1
    where = f"{SLURM_ID}={task_id}, {SLURM_MIN}={low}, {SLURM_COUNT}={count}"
    offset = task_id - low
    if step < 1 or offset % step:
        raise ValueError(
            f"{SLURM_ID}={task_id} is not on the array's step "
            f"({SLURM_MIN}={low}, {SLURM_STEP}={step})"
        )
    return _checked(offset // step, count, where)


def _checked(index: int, count: int, where: str) -> Shard:
    """Build the shard, explaining the scheduler setting that went wrong."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1 ({where})")
    if not 0 <= index < count:
        raise ValueError(
            f"shard index {index} is outside 0..{count - 1} ({where}); "
            f"task indexes must form one range like --array=0-{count - 1} "
            f"(or a-b:step) so that each maps to exactly one shard"
        )
    return Shard(index, count)


def shard_from_env(environ: Mapping[str, str]) -> Shard | None:
    """The shard a batch scheduler assigned to this process, or None.

    - Kubernetes Indexed Job: index from ``JOB_COMPLETION_INDEX`` (set by the
      control plane), count from ``STREAMRUN_SHARD_COUNT``, which the Job
      manifest must set itself to the value of ``.spec.completions``::

          spec:
            completions: 8
            completionMode: Indexed
            template:
              spec:
                containers:
                - env:
                  - {name: STREAMRUN_SHARD_COUNT, value: "8"}

    - Slurm job array: ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``;
      arrays need not start at 0 (``--array=1-8``): the index is the task id
      minus ``SLURM_ARRAY_TASK_MIN`` (divided by ``SLURM_ARRAY_TASK_STEP`` for
      stepped ranges such as ``--array=0-14:2``).

    A missing count raises ValueError naming the variable to set, and so
    does an index outside 0..count-1: guessing would silently skip or repeat
    inputs. Both schedulers present at once is ambiguous and also raises.
    """
    k8s_index = _env_int(environ, K8S_INDEX)
    slurm_id = _env_int(environ, SLURM_ID)
    if k8s_index is not None and slurm_id is not None:
        raise ValueError(
            f"both {K8S_INDEX} and {SLURM_ID} are set; "
            f"pass --shard I/N to say which shard this is"
        )
    if k8s_index is not None:
        return _from_kubernetes(environ, k8s_index)
    if slurm_id is not None:
        return _from_slurm(environ, slurm_id)
    return None
