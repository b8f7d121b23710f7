"""One bounded HTTP GET, shared by the AIA (intermediates) and CRL fetchers."""

from __future__ import annotations

#: Read the body in pieces of this size: a CRL of several MB arrives in many network reads.
CHUNK = 64 * 1024


class TooLarge(ValueError):
    """The body is larger than the fetcher accepts."""


async def fetch_bounded(url: str, timeout: float, max_body: int) -> bytes:
    """The whole body of ``url``, however many network reads it takes; raises on HTTP errors, on
    timeout, and (``TooLarge``) as soon as the body is known to exceed ``max_body`` bytes: by its
    Content-Length before reading any of it, else once more than ``max_body`` bytes arrived."""
    import aiohttp  # lazily: it costs a quarter of a second of `check`'s start-up

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.get(url, allow_redirects=True, max_redirects=3) as response,
    ):
        response.raise_for_status()
        if response.content_length is not None and response.content_length > max_body:
            raise TooLarge(f"larger than {max_body} bytes ({response.content_length} announced)")
        body = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > max_body:
                raise TooLarge(f"larger than {max_body} bytes")
    return bytes(body)
