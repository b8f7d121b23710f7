"""Basic auth: never a 500, hashes checked at start, bcrypt off the event loop (issues 18.5, 18.9)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator

import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mqtt_cert_exporter.config import ConfigError
from mqtt_cert_exporter.web import basicauth
from mqtt_cert_exporter.web.basicauth import BasicAuth, hash_problem
from mqtt_cert_exporter.web.webconfig import WebConfig, parse_web_config

PASSWORD = b"scrape-me-please"
CHECKPW = bcrypt.checkpw
FAST = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4)).decode()

Client = TestClient[web.Request, web.Application]


def basic(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


@pytest.mark.parametrize(
    ("hashed", "message"),
    [
        ("plaintext", "not a bcrypt hash"),
        ("$2y$10$", "not a bcrypt hash"),
        ("$2y$03$" + "a" * 53, "bcrypt cost 3 is outside 4-31"),
        ("$2y$04$" + "a" * 53, "not a valid bcrypt hash"),
        (12345, "not a bcrypt hash"),
    ],
)
def test_malformed_hashes_are_refused_at_start_with_their_path(hashed: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_web_config({"basic_auth_users": {"alice": hashed}}, base_dir="/")
    [error] = caught.value.errors
    assert error.startswith(f"basic_auth_users.alice: {message}")


def test_hashes_from_htpasswd_and_python_are_accepted() -> None:
    # htpasswd writes $2y$, Python's bcrypt $2b$: the same algorithm
    assert hash_problem(FAST) is None
    assert hash_problem("$2y$" + FAST[4:]) is None


async def test_passwords_past_72_bytes_compare_like_bcrypt_and_htpasswd() -> None:
    long_password = b"p" * 72
    auth = BasicAuth({"alice": bcrypt.hashpw(long_password, bcrypt.gensalt(rounds=4))})
    assert await auth.allows(basic("alice", long_password + b"ignored by bcrypt")) is True
    assert await auth.allows(basic("alice", b"q" * 100)) is False
    assert await auth.allows(basic("bob", b"q" * 100)) is False


@pytest.mark.parametrize(
    "header", [None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()]
)
async def test_junk_authorization_is_refused(header: str | None) -> None:
    assert await BasicAuth({"alice": FAST.encode()}).allows(header) is False


def test_unknown_users_are_compared_at_the_configured_cost() -> None:
    auth = BasicAuth({"alice": bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=6))})
    assert auth._dummy.startswith(b"$2b$06$")  # noqa: SLF001 - the dummy hash's cost is the point
    assert not auth.mixed_costs
    mixed = BasicAuth({"a": FAST.encode(), "b": bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=5))})
    assert mixed._dummy.startswith(b"$2b$05$")  # noqa: SLF001 - the dummy hash's cost is the point
    assert mixed.mixed_costs


async def test_successful_checks_are_cached_and_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(basicauth, "CACHE_ENTRIES", 4)
    users = {f"user{n}": bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4)) for n in range(6)}
    auth = BasicAuth(users)
    for user in users:
        assert await auth.allows(basic(user, PASSWORD))
    assert auth.cached == 4
    assert not await auth.allows(basic("user0", b"wrong"))
    assert auth.cached == 4  # failures are never cached


class Gate:
    """Holds every bcrypt check (the real one) until opened: what a costly hash does, made deterministic."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)

    def checkpw(self, password: bytes, hashed: bytes) -> bool:
        self.entered.release()
        self.open.wait(30)
        return bool(CHECKPW(password, hashed))

    async def wait_for_checks(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.entered.acquire, timeout=30)


@pytest.fixture
async def gated() -> AsyncIterator[tuple[Client, BasicAuth, Gate]]:
    config = WebConfig(auth=BasicAuth({"prometheus": FAST.encode()}))
    app = web.Application(middlewares=[config.middleware()])

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/metrics", metrics)
    gate = Gate()
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, config.auth, gate
    gate.open.set()
    config.auth.close()


async def status(client: Client, password: bytes, user: str = "prometheus") -> int:
    async with client.get("/metrics", headers={"Authorization": basic(user, password)}) as response:
        await response.read()
        return response.status


async def test_a_cached_scrape_is_answered_while_guesses_are_being_hashed(
    gated: tuple[Client, BasicAuth, Gate], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, auth, gate = gated
    assert await status(client, PASSWORD) == 200  # a real check, then cached
    monkeypatch.setattr(bcrypt, "checkpw", gate.checkpw)
    guesses = [asyncio.create_task(status(client, b"guess", user)) for user in ("prometheus", "nobody")]
    await gate.wait_for_checks(2)
    assert await status(client, PASSWORD) == 200  # answered while both guesses are being hashed
    assert auth._pending == 2  # noqa: SLF001 - the checks in flight
    gate.open.set()
    assert await asyncio.gather(*guesses) == [401, 401]


async def test_a_flood_of_guesses_is_told_to_come_back_not_queued(
    gated: tuple[Client, BasicAuth, Gate], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, gate = gated
    monkeypatch.setattr(basicauth, "MAX_PENDING_CHECKS", 2)
    monkeypatch.setattr(bcrypt, "checkpw", gate.checkpw)
    held = [asyncio.create_task(status(client, b"guess%d" % n)) for n in range(2)]
    await gate.wait_for_checks(2)
    assert await asyncio.gather(*(status(client, b"more%d" % n) for n in range(4))) == [429] * 4
    gate.open.set()
    assert await asyncio.gather(*held) == [401, 401]
