"""One bounded HTTP GET, shared by the AIA (intermediates) and CRL fetchers."""

from __future__ import annotations


async def fetch_bounded(url: str, timeout: float, max_body: int) -> bytes:
    """The body of ``url``; raises on HTTP errors, on timeout, and when it exceeds ``max_body`` bytes."""
    import aiohttp  # lazily: it costs a quarter of a second of `check`'s start-up

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.get(url, allow_redirects=True, max_redirects=3) as response,
    ):
        response.raise_for_status()
        body = await response.content.read(max_body + 1)
    if len(body) > max_body:
        raise ValueError(f"larger than {max_body} bytes")
    return body
