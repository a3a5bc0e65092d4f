"""The console's HTML: one layout, tables and small formatters, and its one stylesheet.

Everything a page shows passes through ``esc`` (html.escape, quotes included) or is built here
from numbers; page modules join fragments these functions return and never format user data
into markup themselves. A fragment is a ``Markup`` (a str known to be safe), so ``table`` can
tell a cell already rendered (a link, a chart) from a value to escape.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote


class Markup(str):
    """HTML built by this package: inserted as it is, where any other str is escaped."""


def esc(value: object) -> Markup:
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    return Markup(sep.join(esc(p) for p in parts))


def tag(name: str, content: object = "", **attrs: object) -> Markup:
    """<name attr="value">content</name>, every value escaped (``class_`` for class)."""
    attributes = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return Markup(f"<{name}{attributes}>{esc(content)}</{name}>")


def link(href: str, text: object) -> Markup:
    return tag("a", text, href=href)


def path(*parts: str) -> str:
    """A console path with each part URL-quoted: ``path("endpoints", name)``."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, empty: str = "none yet",
          class_: str = "") -> Markup:
    body = [tag("tr", join(tag("td", cell) for cell in row)) for row in rows]
    if not body:
        return tag("p", empty, class_="muted")
    head = tag("tr", join(tag("th", h) for h in headers))
    return tag("table", Markup(tag("thead", head) + tag("tbody", join(body))), class_=class_ or None)


def pairs(items: Iterable[tuple[str, object]]) -> Markup:
    """A definition list: what, then its value."""
    return tag("dl", join(Markup(tag("dt", k) + tag("dd", v)) for k, v in items))


def state(value: str) -> Markup:
    """A state word, coloured by what it means (READY, ALIVE, FAILED, ...)."""
    good = {"READY", "ALIVE", "SUCCEEDED", "production", "approved", "passed", "ok"}
    bad = {"LOST", "FAILED", "CANCELLED", "retired", "failed", "alert"}
    kind = "good" if value in good else "bad" if value in bad else "other"
    return tag("span", value, class_=f"state {kind}")


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + " UTC" if seconds else "-"


def number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


NAV = (("agents", "Agents"), ("endpoints", "Endpoints"), ("canary", "Canary"), ("health", "ML health"),
       ("models", "Models"), ("runs", "Pipeline runs"), ("events", "Events"), ("audit", "Audit"))


def page(title: str, body: Markup, *, section: str = "", who: str = "", refresh_s: int = 0) -> bytes:
    """A whole page: the navigation (when someone is logged in), the title, the body; reloaded
    every ``refresh_s`` seconds when set (pages of live traffic)."""
    nav = Markup("")
    if who:
        links = join(tag("a", text, href=f"/{key}", class_="here" if key == section else None) for key, text in NAV)
        logout = Markup('<form method="post" action="/logout"><button type="submit">Log out</button></form>')
        nav = tag("nav", Markup(links + tag("span", who, class_="who") + logout))
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        + (f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s > 0 else "") +
        f'<title>{esc(title)} · Milepost</title><link rel="stylesheet" href="/style.css"></head>'
        f'<body><header><b>Milepost</b> console</header>{nav}<main><h1>{esc(title)}</h1>{body}</main></body></html>'
    )
    return document.encode()


CSS = b"""
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:.6em 1.2em}
nav{display:flex;gap:1em;align-items:center;background:#fff;border-bottom:1px solid #dde;padding:.5em 1.2em}
nav a{color:#2557a7;text-decoration:none}nav a.here{font-weight:bold;border-bottom:2px solid #2557a7}
nav .who{margin-left:auto;color:#667}nav form{margin:0}
main{padding:1em 1.2em;max-width:1200px}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;background:#fff;margin:.4em 0}
th,td{border:1px solid #dde;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef0f4}td.n{text-align:right}.muted{color:#778}
.state{padding:0 .4em;border-radius:3px}.good{background:#d6f2dd}.bad{background:#f8d7d7}.other{background:#eee}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:#667}dd{margin:0}
svg{background:#fff;border:1px solid #dde;margin:.4em 0}svg text{font:11px system-ui,sans-serif}
.error{background:#fff3f3;border:1px solid #e0b4b4;padding:.8em}
form.login textarea{width:40em;max-width:100%;font-family:monospace}
"""
