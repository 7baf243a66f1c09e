"""The local web view over plain HTTP, against a running agent: what it serves, the
live stream, the trend from the buffer, and actions that need the PIN and go through
the same command path as the CLI's and the platform's."""

from __future__ import annotations

import http.client
import json
import re
import time

from edge_agent.demo.platform import PlatformSubscriber
from simulators import SimulatedDevice
from tests.support import AgentProcess, WebClient, wait_until

Running = tuple[AgentProcess, WebClient]


def open_alarm(client: WebClient, key: str) -> dict | None:
    return next((a for a in client.site().get("alarms", []) if a["key"] == key), None)


def live_events(port: int, count: int) -> list[dict]:
    """The first ``count`` snapshots of the live stream."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/live")
    response = conn.getresponse()
    assert (200, "text/event-stream") == (response.status, response.getheader("Content-Type"))
    events: list[dict] = []
    while len(events) < count:
        line = response.readline().decode()
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    conn.close()
    return events


def test_every_asset_comes_from_the_gateway_under_a_strict_policy(web_agent: Running) -> None:
    _, client = web_agent
    status, headers, page = client.request("GET", "/")
    assert (200, "text/html") == (status, headers.get_content_type())
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"/static/app.js", "/static/app.css"} <= set(assets)
    for asset in assets:
        assert asset.startswith("data:") or (asset.startswith("/") and not
                                             asset.startswith("//")), asset
        if asset.startswith("/static/"):
            status, _, body = client.request("GET", asset)
            assert status == 200
            assert body
            # No address outside the gateway, but the SVG namespace (a name, never fetched).
            assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", body), asset


def test_live_snapshots_arrive_every_second_with_the_site(web_agent: Running) -> None:
    _, client = web_agent
    first, second = live_events(client.port, 2)
    assert 0.5 <= (second["now_ms"] - first["now_ms"]) / 1000 <= 3
    channels = {c["ch"]: c for c in second["channels"]}
    assert (2.0, "ppm", "good") == (channels["gas1.co"]["v"], channels["gas1.co"]["u"],
                                    channels["gas1.co"]["q"])
    assert [{"space": "tank", "devices": ["gas1"]}] == second["groups"]
    assert ["tank"] == [e["space"] for e in second["entry"]]
    assert {"connected", "broker"} <= set(second["uplink"])
    assert "field" in second["health"]["buses"]


def test_the_trend_comes_from_the_buffer_with_the_limits(web_agent: Running,
                                                        gas_detector: SimulatedDevice) -> None:
    _, client = web_agent
    gas_detector.pin("co", 40)  # over level 1 (24): the bucket records the alarm
    wait_until(lambda: open_alarm(client, "gas1.co:above:1"), 10, "the CO alarm")
    status, _, trend = client.request("GET", "/api/trend?ch=gas1.co")
    assert status == 200
    assert [{"level": 1, "direction": "above", "setpoint": 24.0},
            {"level": 2, "direction": "above", "setpoint": 160.0}] == trend["limits"]
    assert (40.0, 1) == (trend["points"][-1][2], trend["points"][-1][4])  # high, level

    def closed_in_alarm() -> bool:  # a 10-s bucket closed and stored in the buffer
        points = client.request("GET", "/api/trend?ch=gas1.co")[2]["points"]
        return len(points) >= 2 and points[-2][4] == 1 and points[-2][2] == 40.0
    wait_until(closed_in_alarm, 25, "a closed bucket in alarm")
    assert 404 == client.request("GET", "/api/trend?ch=gas1.nope")[0]


def test_actions_are_refused_without_the_right_pin(web_agent: Running,
                                                   gas_detector: SimulatedDevice) -> None:
    agent, client = web_agent
    gas_detector.pin("co", 40)
    wait_until(lambda: open_alarm(client, "gas1.co:above:1"), 10, "the CO alarm")
    status, _, body = client.request("POST", "/api/action", {
        "action": "ack-alarm", "by": "x", "key": "gas1.co:above:1"})
    assert (400, "bad_request") == (status, body["error"]["code"])
    assert (401, "wrong_pin") == (lambda r: (r[0], r[1]["error"]["code"]))(
        client.act("ack-alarm", pin="0000", key="gas1.co:above:1"))
    status, _, body = client.request("POST", "/api/action", {
        "action": "ack-alarm", "pin": WebClient.PIN, "by": "x", "key": "gas1.co:above:1"},
        headers={"Origin": "http://elsewhere.example"})
    assert (403, "refused") == (status, body["error"]["code"])
    # No action but the four: the config cannot be changed from the page, PIN or not.
    status, body = client.act("set-config", toml="gateway_id = 'x'")
    assert (400, "bad_request") == (status, body["error"]["code"])
    assert "unacknowledged" == open_alarm(client, "gas1.co:above:1")["state"]
    # Five tries per address, then one each 10 s: four more wrong PINs are the limit.
    codes = [client.act("ack-alarm", pin="1111", key="gas1.co:above:1")[0] for _ in range(4)]
    assert [401, 401, 429, 429] == codes  # 2 of the 5 were spent above
    assert "wrong PIN" in agent.log
    assert WebClient.PIN not in agent.log


def test_acknowledging_with_the_pin_goes_the_command_path(
        web_agent: Running, gas_detector: SimulatedDevice,
        platform: PlatformSubscriber) -> None:
    _, client = web_agent
    gas_detector.pin("co", 40)
    wait_until(lambda: open_alarm(client, "gas1.co:above:1"), 10, "the CO alarm")
    status, reply = client.act("ack-alarm", key="gas1.co:above:1")
    assert (200, True, "ack-alarm") == (status, reply["ok"], reply["command"])
    assert "acknowledged" == open_alarm(client, "gas1.co:above:1")["state"]
    view = platform.gateways["gw-test"]
    assert platform.wait_for(lambda: any(
        e["transition"] == "acknowledged" and e.get("by") == "Wang Fang (web)"
        for e in view.events), 10), view.events


def test_entry_from_the_page_follows_the_entry_rules(web_agent: Running) -> None:
    _, client = web_agent
    status, reply = client.act("entry-start", space="tank")
    assert (409, "refused") == (status, reply["error"]["code"])  # no pre-entry test yet
    assert (200, True) == (lambda r: (r[0], r[1]["ok"]))(client.act("entry-test", space="tank"))
    assert (200, True) == (lambda r: (r[0], r[1]["ok"]))(client.act("entry-start", space="tank"))
    session = client.site()["entry"][0]["session"]
    assert ("active", "Wang Fang (web)") == (session["state"], session["by"])
    assert session["next_record_ms"] > time.time() * 1000
    assert (200, True) == (lambda r: (r[0], r[1]["ok"]))(client.act("entry-end", space="tank"))
    assert client.site()["entry"][0]["session"] is None


def open_live(port: int) -> tuple[http.client.HTTPConnection, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/live")
    return conn, conn.getresponse().status


def test_live_pages_are_bounded(web_agent: Running) -> None:
    _, client = web_agent
    streams = [open_live(client.port) for _ in range(8)]  # web.max_clients
    assert [200] * 8 == [status for _, status in streams]
    status, headers, body = client.request("GET", "/api/live")
    assert (503, "busy", "10") == (status, body["error"]["code"], headers["Retry-After"])
    for conn, _ in streams:
        conn.close()

    def one_more() -> bool:  # once the view has noticed that the pages went away
        conn, status = open_live(client.port)
        conn.close()
        return status == 200
    wait_until(one_more, 10, "room for a live page after the others closed")
