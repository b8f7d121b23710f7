"""The little HTTP/1.1 a probe speaks: one response head (WebSocket upgrade, proxy CONNECT). Pure.

A hostile server can send anything: heads are bounded (``MAX_HEAD``) and every malformation raises
``HttpError`` with a message that says what was wrong, never more than a short preview of the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Never buffer more than this waiting for the end of a response head.
MAX_HEAD = 16 * 1024
HEAD_END = b"\r\n\r\n"


class HttpError(ValueError):
    """The bytes are not an HTTP/1.x response head."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    #: (name, value) in the order received; names as sent
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The value of a header (case-insensitive); repeated headers joined with ", "."""
        wanted = name.lower()
        values = [value for key, value in self.headers if key.lower() == wanted]
        return ", ".join(values) if values else None

    def has_token(self, name: str, token: str) -> bool:
        """Whether a comma-separated header (Connection, Upgrade) lists ``token`` (case-insensitive)."""
        value = self.header(name) or ""
        return token.lower() in (part.strip().lower() for part in value.split(","))


def head_length(buffer: bytes) -> int | None:
    """Bytes the response head at the start of ``buffer`` occupies (blank line included); None: incomplete.

    Raises HttpError as soon as the bytes cannot be the start of an HTTP response, or exceed MAX_HEAD.
    """
    if not b"HTTP/".startswith(buffer[:5]):
        raise HttpError(f"not an HTTP response: starts with {_preview(buffer)}")
    end = buffer.find(HEAD_END, 0, MAX_HEAD + len(HEAD_END))
    if end != -1:
        return end + len(HEAD_END)
    if len(buffer) >= MAX_HEAD:
        raise HttpError(f"response head longer than {MAX_HEAD} bytes")
    return None


def parse_response_head(head: bytes) -> HttpResponse:
    """Parse a complete response head (status line and headers, up to the blank line)."""
    text = head.decode("iso-8859-1")
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise HttpError("empty response")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"malformed status line {_preview(status_line.encode('iso-8859-1'))}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpError(f"malformed header line {_preview(line.encode('iso-8859-1'))}")
        headers.append((name, value.strip()))
    return HttpResponse(status=int(code), reason=reason.strip(), headers=tuple(headers))


def _preview(data: bytes, limit: int = 32) -> str:
    shown = data[:limit]
    return repr(shown) + ("..." if len(data) > limit else "")
