"""Storage URLs as the user types them: which storage they name, how they are shown (passwords
masked everywhere: study.json, logs, reports, error lines), and the typos refused before anything
is written (issue #23: ``postgresql:/u:pw@host/db`` had become a journal file named after it).
"""

from __future__ import annotations

import re
from pathlib import Path

from localearn.errors import ConfigError


def mask_url(url: str | None) -> str | None:
    """``url`` with any password replaced by ``***`` (what study.json, logs and reports show)."""
    if url is None or "://" not in url:  # a path, or a typo such as postgresql:/user:pw@host/db
        return None if url is None else scrub(url)
    from sqlalchemy.engine import make_url

    try:
        return scrub(make_url(url).render_as_string(hide_password=True))  # and a password typed elsewhere
    except Exception:  # not an SQLAlchemy URL: hide everything between '//' and '@'
        head, _, rest = url.partition("://")
        return f"{head}://***@{rest.rpartition('@')[2]}" if "@" in rest else url


def scrub(text: str) -> str:
    """``text`` with every ``:secret@`` masked, percent-encoded too (a driver's message may quote a
    mistyped URL's parts, e.g. a password that landed in the database name)."""
    return re.sub(r"(?i)(:|%3a)[^\s:/@%]*(@|%40)", r"\1***\2", text)


def describe(url: str | None, study_dir: Path) -> str:
    """The storage as it may be shown: a masked URL or the journal path."""
    return str(mask_url(url)) if is_rdb(url) else str(journal_path(url, study_dir))


def check_url(url: str | None) -> None:
    """Refuse a storage that is neither an RDB URL (``dialect://...``) nor a journal path before
    anything is written: a mistyped URL (``postgresql:/u:pw@host/db``, or ``sqlite:///u:pw@host``)
    would otherwise become a file named after it, password included."""
    if url is None:
        return
    if is_rdb(url):
        from sqlalchemy.engine import make_url

        try:
            tail = make_url(url).database or ""
        except Exception:  # opening it reports why, masked
            return
        typo = bool(re.search(r":[^/@]*@", tail))  # user:password@ landed in the database name
    else:
        tail = url.removeprefix("journal:")
        if not tail.strip():
            raise ConfigError(f"storage {url!r} names no journal file; use journal:PATH or an RDB URL")
        typo = "://" in tail or bool(re.search(r":[^/@]*@", tail)) or (
            tail == url and re.match(r"[A-Za-z][\w+.-]*:", url) is not None)
    if typo:
        raise ConfigError(f"storage {mask_url(url)!r} is neither an RDB URL (dialect://user:password@host/db, "
                          "sqlite:///file.db) nor a journal file (journal:PATH)")


def is_rdb(url: str | None) -> bool:
    return url is not None and "://" in url and not url.startswith("journal:")


def journal_path(url: str | None, study_dir: Path) -> Path:
    if url is None:
        return study_dir / "journal.log"
    return Path(url.removeprefix("journal:")).expanduser()


def storage_file(url: str | None, study_dir: Path) -> Path | None:
    """The file a journal or SQLite storage lives in (None: a database server, or in memory)."""
    if not is_rdb(url):
        return journal_path(url, study_dir)
    assert url is not None
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:  # not a URL SQLAlchemy reads: opening it reports why
        return None
    return Path(database) if database and database != ":memory:" else None
