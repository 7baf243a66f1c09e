"""Simplified Chinese and English for the people on site: the web view and the CLI.

Messages are marked with ``_()`` in Python and in the page's script, and kept in
gettext catalogs with Babel (``make i18n`` extracts them and updates
``locale/zh_CN/LC_MESSAGES/edge_agent.po``). The catalog is read from the .po at
first use, so no generated .mo file lives in the tree.
Safety terms follow the standards' Chinese wording: 一级报警/二级报警 (GB 16808),
故障, 屏蔽, 确认, 有限空间 (GB 30871).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh_CN")
DOMAIN = "edge_agent"
LOCALE_DIR = Path(__file__).parent / "locale"


def catalog_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def _catalog(lang: str) -> Any:
    from babel.messages.pofile import read_po  # only when a translation is wanted

    with catalog_path(lang).open("rb") as f:
        return read_po(f, locale=lang)


@functools.cache
def messages(lang: str) -> dict[str, str]:
    """Msgid -> translation of every translated message (none for English)."""
    if lang == "en":
        return {}
    return {m.id: m.string for m in _catalog(lang) if isinstance(m.id, str) and m.id
            and m.string and not m.fuzzy}


def choose(*wanted: str | None) -> str:
    """The first supported language among ``wanted`` (``zh-CN``, ``zh_CN.UTF-8``, ``en``,
    an Accept-Language header...); English when none is.
    """
    for value in wanted:
        for part in (value or "").replace(",", ":").split(":"):
            code = part.split(";")[0].split(".")[0].split("@")[0].strip().lower()
            if code.startswith("zh"):
                return "zh_CN"
            if code.startswith("en") or code in ("c", "posix"):
                return "en"
    return "en"


_chosen: str | None = None  # by the site config, over the environment


def use(lang: str | None) -> None:
    """Speak ``lang`` from now on (a site config's ``language``); None: the environment's."""
    global _chosen
    _chosen = lang


def current() -> str:
    """The CLI's language: the site config's, else as gettext finds it in the environment
    (LANGUAGE, LC_ALL, LC_MESSAGES, LANG).
    """
    return _chosen or choose(*(os.environ.get(v)
                               for v in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")))


def _(message: str) -> str:
    """``message`` in the current language."""
    return messages(current()).get(message, message)
