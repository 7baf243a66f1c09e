"""Every user-facing message has its Simplified Chinese, with the same placeholders."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

from edge_agent import i18n

REPO = Path(__file__).resolve().parents[2]


def marked() -> set[str]:
    """The messages marked with _() in the sources named by babel.cfg."""
    with (REPO / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    return {message for _, _, message, _, _ in extract_from_dir(
        REPO, method_map, options_map, keywords={"_": None}) if message}


def test_every_marked_message_has_a_translation() -> None:
    missing = marked() - set(i18n.messages("zh_CN"))
    assert not missing, f"no translation (run make i18n, then translate): {sorted(missing)}"


def test_translations_keep_the_placeholders() -> None:
    for message, translated in i18n.messages("zh_CN").items():
        assert sorted(re.findall(r"\{\w+\}|%\(\w+\)[sd]|%[sd]", message)) == sorted(
            re.findall(r"\{\w+\}|%\(\w+\)[sd]|%[sd]", translated)), message


def test_the_language_follows_the_config_or_the_locale(monkeypatch) -> None:
    assert "zh_CN" == i18n.choose("zh-CN,zh;q=0.9,en;q=0.8")
    assert "zh_CN" == i18n.choose(None, "zh_CN.UTF-8")
    assert "en" == i18n.choose("de-DE", "en-GB")
    assert "en" == i18n.choose("fr_FR.UTF-8")  # none supported: English
    monkeypatch.setenv("LANGUAGE", "")
    monkeypatch.setenv("LC_ALL", "")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert ("zh_CN", "二级报警") == (i18n.current(), i18n._("Level 2 alarm"))
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert "Level 2 alarm" == i18n._("Level 2 alarm")
    i18n.use("zh_CN")  # a site config's language goes over the environment's
    try:
        assert "二级报警" == i18n._("Level 2 alarm")
    finally:
        i18n.use(None)
