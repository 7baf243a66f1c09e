"""The web view in headless Chromium (Debian's chromium, driven by Playwright), on a
phone-sized screen against a running agent: values appear and update, a CO rise turns
its tile red and adds an alarm, the trend shows it, the PIN guards the acknowledgement,
the page recovers after a restart, and the Chinese page reads in Chinese. Screenshots
go to SHOTS; no request may leave the gateway.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from simulators import SimulatedDevice
from tests.support import AgentProcess, WebClient, wait_until

SHOTS = Path(tempfile.gettempdir()) / "edge-agent-web-shots"
Running = tuple[AgentProcess, WebClient]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"),
                                     args=["--no-sandbox"])
        yield chromium
        chromium.close()


def phone(browser: Browser, client: WebClient, path: str = "/") -> tuple[Page, list[str]]:
    """A phone-sized page on ``path``; the list collects every URL it requests."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(client.url + path)
    return page, requested


def only_the_gateway(requested: list[str], client: WebClient) -> None:
    assert requested, "the page requested nothing"
    outside = [u for u in requested if not (u.startswith(client.url + "/") or u == client.url
                                            or u.startswith("data:"))]
    assert not outside, outside


def test_values_update_a_co_rise_alarms_and_the_pin_guards_the_ack(
        browser: Browser, web_agent: Running, gas_detector: SimulatedDevice) -> None:
    _, client = web_agent
    page, requested = phone(browser, client)
    co = page.locator('[data-channel="gas1.co"]')
    expect(co).to_contain_text("2.0")
    expect(co).to_have_class(re.compile(r"\bnormal\b"))
    gas_detector.pin("co", 7)
    expect(co).to_contain_text("7.0")  # the value follows the device, live
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SHOTS / "site-normal.png", full_page=True)

    gas_detector.pin("co", 40)  # over level 1 (24 ppm)
    expect(co).to_have_class(re.compile(r"\balarm\b.*\bunacked\b"))
    expect(co).to_contain_text("Level 1 alarm")
    expect(page.locator('[data-tab="alarms"] .count')).to_have_text("1")
    page.screenshot(path=SHOTS / "site-alarm.png", full_page=True)

    co.click()  # the trend of the channel
    expect(page.locator("svg.trend rect.episode").first).to_be_attached()
    wait_until(lambda: int(page.locator("svg.trend").get_attribute("data-points") or 0) >= 2,
               10, "the rise in the trend")
    high = page.evaluate("""() => {  // the highest point drawn, in data units
        const svg = document.querySelector("svg.trend");
        const ys = svg.querySelector("polyline.line").getAttribute("points").trim()
            .split(" ").map((p) => +p.split(",")[1]);
        return Math.min(...ys);
    }""")
    level1 = float(page.locator("svg.trend line.limit1").get_attribute("y1"))
    assert high < level1  # the line rises above the dashed level-1 line (y grows down)
    page.screenshot(path=SHOTS / "trend-co.png", full_page=True)

    page.goto(client.url + "/#alarms")
    row = page.locator('tr[data-key="gas1.co:above:1"]')
    expect(row).to_contain_text("unacknowledged")
    row.locator("button.ack").click()
    page.fill("#act-by", "Wang Fang")
    page.fill("#act-pin", "0000")
    page.click("#act-ok")
    expect(page.locator("#act-error")).to_have_text("Wrong PIN.")
    expect(row).to_contain_text("unacknowledged")
    page.fill("#act-pin", WebClient.PIN)
    page.click("#act-ok")
    expect(page.locator("#act")).not_to_be_visible()
    expect(row.locator("td.state")).to_have_text("acknowledged")
    page.goto(client.url + "/#site")
    expect(co).not_to_have_class(re.compile(r"\bunacked\b"))  # steady once acknowledged
    only_the_gateway(requested, client)


def test_the_page_says_connection_lost_and_recovers_after_a_restart(
        browser: Browser, web_agent: Running) -> None:
    agent, client = web_agent
    page, requested = phone(browser, client)
    expect(page.locator('[data-channel="gas1.co"]')).to_contain_text("2.0")
    expect(page.locator("#conn")).to_be_hidden()
    assert 0 == agent.stop()
    expect(page.locator("#conn")).to_be_visible(timeout=10_000)
    expect(page.locator("#conn")).to_contain_text("Connection lost")
    page.screenshot(path=SHOTS / "connection-lost.png", full_page=True)
    agent.start()
    expect(page.locator("#conn")).to_be_hidden(timeout=30_000)
    expect(page.locator('[data-channel="gas1.co"]')).to_contain_text("2.0")
    only_the_gateway(requested, client)


def test_the_chinese_page_reads_in_chinese(browser: Browser, web_agent: Running,
                                           gas_detector: SimulatedDevice) -> None:
    _, client = web_agent
    page, requested = phone(browser, client, "/?lang=zh_CN")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#tabs")).to_contain_text("站点报警作业网关")
    expect(page.locator('[data-group="tank"] h2')).to_have_text("有限空间 tank")
    co = page.locator('[data-channel="gas1.co"]')
    expect(co).to_contain_text("正常")
    gas_detector.pin("co", 40)
    expect(co).to_contain_text("一级报警")
    page.goto(client.url + "/?lang=zh_CN#alarms")
    expect(page.locator('tr[data-key="gas1.co:above:1"] td.state')).to_have_text("未确认")
    page.screenshot(path=SHOTS / "alarms-zh.png", full_page=True)
    page.goto(client.url + "/?lang=zh_CN#entry")
    expect(page.locator('[data-space="tank"]')).to_contain_text("作业前检测")
    only_the_gateway(requested, client)
