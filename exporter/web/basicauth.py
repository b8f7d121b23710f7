"""HTTP basic auth against bcrypt hashes (exporter-toolkit's ``basic_auth_users``), off the event loop.

bcrypt is slow by design (50-300 ms): run on the event loop, a dozen guesses a second stalled every scrape
(issue 18.9). Checks run in a small thread pool (bcrypt releases the GIL) with a bounded queue; a full
queue answers "busy" at once instead of growing. Successful checks are cached (bounded) by a digest of
user, password and hash, as exporter-toolkit does, so a scrape every few seconds costs no bcrypt at all.
An unknown user is compared against a dummy hash made at the highest cost of the configured users, so
that path takes as long as a wrong password. Passwords are cut at 72 bytes, the part bcrypt uses (what
htpasswd, Go's bcrypt and bcrypt < 5 do; bcrypt 5 raises instead, which answered 500: issue 18.5).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import bcrypt

#: bcrypt uses this many bytes of a password and ignores the rest.
MAX_PASSWORD_BYTES = 72
#: Successful checks remembered (least recently used dropped first); only valid credentials get in.
CACHE_ENTRIES = 1024
#: Threads running bcrypt: the machine's cores are shared with probing.
CHECK_THREADS = 2
#: bcrypt checks queued or running at most; more answer "busy" (HTTP 429) without hashing.
MAX_PENDING_CHECKS = 32
_HASH = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")


def hash_problem(hashed: object) -> str | None:
    """Why ``hashed`` cannot be used as a bcrypt hash, or None when it can (checked at start)."""
    if not isinstance(hashed, str):
        return "not a bcrypt hash (expected a string like $2y$10$...)"
    match = _HASH.fullmatch(hashed)
    if match is None:
        return "not a bcrypt hash (expected $2y$, two cost digits, $ and 53 characters of salt and hash)"
    if not 4 <= int(match[1]) <= 31:
        return f"bcrypt cost {int(match[1])} is outside 4-31"
    try:
        bcrypt.checkpw(b"", hashed.encode())
    except ValueError:
        return "not a valid bcrypt hash"
    return None


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None when there are none."""
    if not authorization or not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:], validate=True)
        user, colon, password = decoded.partition(b":")
        return (user.decode(), password) if colon else None
    except (binascii.Error, UnicodeDecodeError):
        return None


class BasicAuth:
    """Who may scrape. ``allows`` answers True, False, or None when too many checks are pending."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        costs = sorted({_cost(hashed) for hashed in self.users.values()})
        #: True when users' hashes have different costs: their names can then be told apart by timing.
        self.mixed_costs = len(costs) > 1
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=costs[-1])) if costs else b""
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    @property
    def cached(self) -> int:
        return len(self._verified)

    async def allows(self, authorization: str | None) -> bool | None:
        if not self.users:
            return True
        given = credentials(authorization)
        if given is None:
            return False
        user, password = given
        password = password[:MAX_PASSWORD_BYTES]
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join([user.encode(), password, hashed or b""])).digest()
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return True
        if self._pending >= MAX_PENDING_CHECKS:
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="bcrypt")
        self._pending += 1
        try:
            matches = await asyncio.get_running_loop().run_in_executor(
                self._executor, bcrypt.checkpw, password, hashed or self._dummy
            )
        finally:
            self._pending -= 1
        if not matches or hashed is None:
            return False
        self._verified[key] = None
        if len(self._verified) > CACHE_ENTRIES:
            self._verified.popitem(last=False)
        return True

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
