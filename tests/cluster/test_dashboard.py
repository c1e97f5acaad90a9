"""The web dashboard (issue 18, docs/dashboard.md) against a real 3-node cluster with auth.

- Without a browser: the page's files are public and carry a strict Content-Security-Policy,
  the summary API pages, filters and sorts, a group's detail shows live heartbeats, and the
  change stream names a group as soon as its state changes.
- In Debian's headless Chromium driven by Playwright (marker ``browser``; skipped with the
  reason when either is missing): log in, see a group's Primary, stop its heartbeats and watch
  the row name the new Primary without a reload; set and clear an override as an administrator;
  see no action as a ``users`` account and the server's refusal when an administrator is demoted
  mid-session; the same page through compose/haproxy.cfg. Every request the page makes must go
  to the node's own origin, and the console must stay free of errors.

``CFS_DASHBOARD_SCREENSHOTS=docs/dashboard`` saves the screenshots of docs/dashboard.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from support.clusterkit import Cluster, free_ports

ADMIN = ("root", "dashboard-admin-pw")
VIEWER = ("viewer", "viewer-pw")
OPERATOR = ("operator", "operator-pw")
GROUPS = "/api/v1/clientfailover/groups"
DASHBOARD = "/api/v1/dashboard"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = os.environ.get("CFS_DASHBOARD_SCREENSHOTS")
HAPROXY = shutil.which("haproxy")

try:
    from playwright.sync_api import ConsoleMessage, Page, Request, sync_playwright
    from playwright.sync_api import expect as playwright_expect

    NO_BROWSER = (
        None
        if CHROMIUM.exists()
        else "Debian's chromium is not installed (/usr/bin/chromium; .ci/run installs it)"
    )
except ImportError:  # the test extra brings it; a partial install skips with the reason
    NO_BROWSER = "playwright is not installed (pip install -e '.[test]')"

pytestmark = pytest.mark.cluster
browser_test = pytest.mark.skipif(NO_BROWSER is not None, reason=NO_BROWSER or "")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"CFS_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}"}
    base = tmp_path_factory.mktemp("dashboard")
    with (
        Cluster(base, size=3, extra_args=["--auth", "required"], env=env) as running,
        httpx.Client(auth=ADMIN, timeout=10) as admin,
    ):
        url = running.urls[0]
        wait_for(lambda: admin.get(url + GROUPS).status_code == 200, "the bootstrap administrator")
        for name, password, role in (VIEWER + ("users",), OPERATOR + ("administrators",)):
            added = admin.post(
                url + "/api/v1/users", json={"Name": name, "Password": password, "Role": role}
            )
            assert added.status_code == 201, added.text
        yield running


@pytest.fixture
def admin() -> Iterator[httpx.Client]:
    with httpx.Client(auth=ADMIN, timeout=10) as client:
        yield client


def make_group(
    admin: httpx.Client, url: str, group: str, sessions: list[str], timeout: str = "00:00:02"
) -> None:
    created = admin.post(
        url + GROUPS, json={"Id": group, "FailoverTimeout": timeout, "Name": f"Line {group}"}
    )
    assert created.status_code in (200, 201), created.text
    for session in sessions:
        added = admin.post(f"{url}{GROUPS}/{group}/clientsessions", json={"Id": session})
        assert added.status_code in (200, 201), added.text


class Heartbeats:
    """The adapters of one group: each session heartbeats every 0.25 s until stopped."""

    def __init__(self, urls: list[str], group: str, scores: dict[str, float]) -> None:
        self._urls, self._group = urls, group
        self._stopped = {session: threading.Event() for session in scores}
        self._threads = [
            threading.Thread(target=self._beat, args=(s, score), daemon=True)
            for s, score in scores.items()
        ]
        for thread in self._threads:
            thread.start()

    def _beat(self, session: str, score: float) -> None:
        path = f"{GROUPS}/{self._group}/clientsessions/{session}/heartbeat"
        stopped = self._stopped[session]
        with httpx.Client(auth=VIEWER, timeout=5) as client:
            turn = 0
            while not stopped.is_set():
                # A node busy or restarting: the next beat goes to the next node.
                with contextlib.suppress(httpx.HTTPError):
                    client.post(
                        self._urls[turn % len(self._urls)] + path, json={"FailoverScore": score}
                    )
                turn += 1
                stopped.wait(0.25)

    def stop(self, session: str) -> None:
        self._stopped[session].set()

    def close(self) -> None:
        for event in self._stopped.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout=10)


def primary_of(admin: httpx.Client, url: str, group: str) -> str | None:
    answer = admin.get(f"{url}{GROUPS}/{group}/status")
    assert answer.status_code == 200, answer.text
    primary: str | None = answer.json()["Primary"]
    return primary


# --------------------------------------------------------------------------- without a browser


def test_ui_files_are_public_same_origin_and_locked_down(cluster: Cluster) -> None:
    with httpx.Client(timeout=10) as anonymous:  # auth is required, yet the page must load
        url = cluster.urls[1]
        root = anonymous.get(url + "/")
        assert root.status_code == 307 and root.headers["location"] == "ui/"
        bare = anonymous.get(url + "/ui")
        assert bare.status_code == 307 and bare.headers["location"] == "ui/"
        page = anonymous.get(url + "/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(
            "/" not in a.split("#")[0] for a in assets if not a.startswith("#")
        ), assets
        assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
        script = anonymous.get(url + "/UI/app.js")  # paths match in any casing, like the API
        assert script.status_code == 200 and script.headers["content-type"].startswith(
            "text/javascript"
        )
        for name in re.findall(r"from '\./([\w.]+)'", script.text):
            module = anonymous.get(f"{url}/ui/{name}")
            assert module.status_code == 200, name
            assert not re.search(r"https?://|fetch\('/|//[a-z]", module.text.replace("://", "")), (
                name
            )
        missing = anonymous.get(url + "/ui/nothing.js")
        assert missing.status_code == 404 and "nothing.js" in missing.json()["Reason"]
        # The data is not public.
        assert anonymous.get(url + DASHBOARD + "/groups").status_code == 401
        assert anonymous.get(url + DASHBOARD + "/events").status_code == 401


def test_me_names_the_user_and_refuses_a_wrong_password(cluster: Cluster) -> None:
    url = cluster.urls[2] + DASHBOARD + "/me"
    with httpx.Client(timeout=10) as client:
        assert client.get(url).json() == {"Name": None, "Role": None, "Authentication": True}
        assert client.get(url, auth=VIEWER).json() == {
            "Name": "viewer",
            "Role": "users",
            "Authentication": True,
        }
        assert client.get(url, auth=ADMIN).json()["Role"] == "administrators"
        wrong = client.get(url, auth=(VIEWER[0], "wrong"), headers={"X-Forwarded-For": "ignored"})
        assert wrong.status_code == 401 and wrong.json()["Error"] == "Authentication is required."
        assert 'Basic realm="cfs"' in wrong.headers.get_list("www-authenticate")[0]


def test_group_summaries_page_filter_and_sort(cluster: Cluster, admin: httpx.Client) -> None:
    url = cluster.urls[0]
    for index in range(12):
        make_group(admin, url, f"Page{index:02}", [] if index % 3 else ["a", "b"])
    beats = Heartbeats(cluster.urls, "Page00", {"a": 90, "b": 40})
    try:
        wait_for(lambda: primary_of(admin, url, "Page00") == "a", "Page00's first Primary")
        follower = cluster.urls[2]
        page = admin.get(follower + DASHBOARD + "/groups", params={"filter": "page", "count": 5})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["Matched"] == 12 and body["Skip"] == 0 and body["Total"] >= 12
        assert [g["Id"] for g in body["Groups"]] == [f"Page{i:02}" for i in range(5)]
        first = body["Groups"][0]
        assert first["Primary"] == "a" and first["Sessions"] == 2 and first["LiveSessions"] == 2
        assert first["Epoch"] == 1 and first["LastDecisionReason"].startswith(
            "Highest FailoverScore"
        )
        assert first["LastDecisionTime"] and first["FailoverTimeout"] == "00:00:02"
        later = admin.get(
            follower + DASHBOARD + "/groups", params={"filter": "PAGE", "count": 5, "skip": 10}
        )
        assert [g["Id"] for g in later.json()["Groups"]] == ["Page10", "Page11"]
        by_epoch = admin.get(
            follower + DASHBOARD + "/groups",
            params={"filter": "page", "sort": "epoch", "order": "desc", "count": 1},
        )
        assert by_epoch.json()["Groups"][0]["Id"] == "Page00"
        orphans = admin.get(
            follower + DASHBOARD + "/groups", params={"filter": "page0", "withoutPrimary": "true"}
        )
        assert (
            "Page00" not in [g["Id"] for g in orphans.json()["Groups"]]
            and orphans.json()["Matched"] == 9
        )
        by_primary = admin.get(follower + DASHBOARD + "/groups", params={"filter": "a"})
        assert "Page00" in [g["Id"] for g in by_primary.json()["Groups"]]  # matched by its Primary
        for params in (
            {"sort": "bogus"},
            {"order": "up"},
            {"count": "0"},
            {"count": "1001"},
            {"skip": "-1"},
        ):
            refused = admin.get(follower + DASHBOARD + "/groups", params=params)
            assert refused.status_code == 400, (params, refused.text)
            assert refused.json()["Error"] == "The request is invalid."
    finally:
        beats.close()


def test_group_detail_shows_live_heartbeats_and_the_grant(
    cluster: Cluster, admin: httpx.Client
) -> None:
    url = cluster.urls[0]
    make_group(admin, url, "Detail", ["a", "b"], timeout="00:00:05")
    beats = Heartbeats(cluster.urls, "Detail", {"a": 100, "b": 50})
    try:
        wait_for(lambda: primary_of(admin, url, "Detail") == "a", "Detail's first Primary")
        detail = admin.get(cluster.urls[1] + DASHBOARD + "/groups/Detail")  # a follower
        assert detail.status_code == 200, detail.text
        sessions = {s["Id"]: s for s in detail.json()["Sessions"]}
        assert sessions["a"]["Role"] == 1 and sessions["b"]["Role"] == 0
        assert sessions["a"]["Live"] and sessions["a"]["HeartbeatAgeSeconds"] < 2
        assert sessions["a"]["FailoverScore"] == 100 and sessions["b"]["ValidFor"] == "00:00:00"
        assert sessions["a"]["ValidFor"] > "00:00:03"  # a 5 s grant, heard moments ago
        assert detail.json()["Group"]["LiveSessions"] == 2
        assert admin.get(cluster.urls[1] + DASHBOARD + "/groups/NoSuchGroup").status_code == 404
    finally:
        beats.close()


def test_change_stream_names_a_changed_group(cluster: Cluster, admin: httpx.Client) -> None:
    url = cluster.urls[2]
    with (
        httpx.Client(auth=VIEWER, timeout=10) as viewer,
        viewer.stream("GET", url + DASHBOARD + "/events") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        events = _events(lines)
        name, hello = next(events)
        assert name == "hello" and hello["Total"] >= 0
        make_group(admin, cluster.urls[0], "Streamed", [])  # created through another node
        name, change = next(events)
        assert name == "groups" and "Streamed" in change["Groups"]
        assert change["Total"] == hello["Total"] + 1


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    name = None
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name is not None:
            yield name, json.loads(line[5:])
            name = None


# --------------------------------------------------------------------------- in Chromium


class Browser:
    """One Chromium page that records every request and every console error."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.loads = 0
        page.on("request", self._on_request)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("load", self._on_load)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def _on_load(self, _page: Page) -> None:
        self.loads += 1

    def login(self, user: tuple[str, str]) -> None:
        self.page.goto(self.origin + "/")
        self.page.get_by_label("User name").fill(user[0])
        self.page.get_by_label("Password").fill(user[1])
        self.page.get_by_role("button", name="Log in").click()
        playwright_expect(self.page.locator("#who-name")).to_contain_text(user[0])

    def row(self, group: str) -> Any:
        return self.page.locator(f"#groups tr[data-group='{group}']")

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)

    def assert_stayed_home(self, allowed_errors: tuple[str, ...] = ()) -> None:
        """Every request went to the node's own origin; no console error but those allowed."""
        own = urlsplit(self.origin)
        strangers = [u for u in self.requests if urlsplit(u)[:2] != own[:2]]
        assert not strangers, f"requests left the node: {strangers}"
        assert self.requests, "the page made no requests at all"
        unexpected = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        assert not unexpected, f"console errors: {unexpected}"


@contextmanager
def chromium(origin: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(15_000)
            yield Browser(page, origin)
        finally:
            browser.close()


@pytest.mark.browser
@browser_test
def test_browser_follows_a_failover_and_sets_an_override(
    cluster: Cluster, admin: httpx.Client
) -> None:
    url = cluster.urls[1]
    make_group(admin, url, "Line1", ["opcua-a", "opcua-b"])
    beats = Heartbeats(cluster.urls, "Line1", {"opcua-a": 100, "opcua-b": 80})
    try:
        wait_for(lambda: primary_of(admin, url, "Line1") == "opcua-a", "Line1's first Primary")
        with chromium(url) as browser:
            page = browser.page
            browser.login(ADMIN)
            row = browser.row("Line1")
            playwright_expect(row.locator("[data-column=Primary] .name")).to_have_text("opcua-a")
            loads = browser.loads

            beats.stop("opcua-a")  # the Primary's adapter goes silent
            playwright_expect(row.locator("[data-column=Primary] .name")).to_have_text(
                "opcua-b", timeout=15_000
            )
            assert browser.loads == loads, "the page was reloaded"
            playwright_expect(page.locator("#announce")).to_contain_text("Primary is now opcua-b")

            row.get_by_role("link", name="Line1").click()
            sessions = page.locator("#sessions")
            playwright_expect(sessions.locator("tr[data-session='opcua-b'] .role")).to_have_text(
                "Primary"
            )
            history = page.locator("#group-history")
            # Newest first; the stale holder may be released in the same decision or one before.
            playwright_expect(history.locator("li").first).to_contain_text("→ opcua-b")
            # The reason in the commercial service's words, as the events API recorded it.
            last = admin.get(f"{url}{GROUPS}/Line1/events").json()[-1]
            playwright_expect(history.locator("li").first).to_contain_text(last["Reason"])

            page.get_by_role("button", name="Make opcua-a Primary…").click()
            dialog = page.locator("#confirm")
            playwright_expect(dialog).to_contain_text("opcua-b holds the grant now")
            page.get_by_label("For how long").fill("00:10:00")
            browser.screenshot("override-dialog")
            dialog.get_by_role("button", name="Make opcua-a Primary").click()
            # opcua-a is silent, yet the override wins once opcua-b's grant is released.
            playwright_expect(sessions.locator("tr[data-session='opcua-a'] .role")).to_have_text(
                "Primary", timeout=15_000
            )
            assert primary_of(admin, url, "Line1") == "opcua-a"
            playwright_expect(sessions.locator("tr[data-session='opcua-a']")).to_contain_text(
                "Primary until"
            )
            browser.screenshot("group")

            page.get_by_role("button", name="Clear override of opcua-a…").click()
            playwright_expect(dialog).to_contain_text("normal rules decide")
            dialog.get_by_role("button", name="Clear override").click()
            playwright_expect(sessions.locator("tr[data-session='opcua-b'] .role")).to_have_text(
                "Primary", timeout=15_000
            )
            assert (
                admin.get(f"{url}{GROUPS}/Line1/clientsessions/opcua-a").json()["RoleOverride"] == 0
            )

            page.get_by_role("link", name="Cluster").click()
            playwright_expect(page.locator("#cluster-ready")).to_contain_text("yes")
            playwright_expect(page.locator("#members tbody tr")).to_have_count(3)
            playwright_expect(page.get_by_label("Log level")).to_have_value("Information")
            browser.screenshot("cluster")

            page.get_by_role("button", name="Log out").click()
            playwright_expect(page.get_by_label("User name")).to_be_visible()
            browser.assert_stayed_home()
    finally:
        beats.close()


@pytest.mark.browser
@browser_test
def test_browser_users_account_sees_but_cannot_act(cluster: Cluster, admin: httpx.Client) -> None:
    url = cluster.urls[2]
    make_group(admin, url, "Line2", ["opcua-a"])
    beats = Heartbeats(cluster.urls, "Line2", {"opcua-a": 100})
    try:
        wait_for(lambda: primary_of(admin, url, "Line2") == "opcua-a", "Line2's first Primary")
        with chromium(url) as browser:
            page = browser.page
            browser.login(VIEWER)
            playwright_expect(
                browser.row("Line2").locator("[data-column=Primary] .name")
            ).to_have_text("opcua-a")
            browser.row("Line2").get_by_role("link", name="Line2").click()
            playwright_expect(
                page.locator("#sessions tr[data-session='opcua-a'] .role")
            ).to_have_text("Primary")
            playwright_expect(page.get_by_text("need an administrators account")).to_be_visible()
            assert page.locator("#sessions button").count() == 0
            assert page.locator("#delete-group").count() == 0
            browser.screenshot("group-users")
            page.get_by_role("link", name="Cluster").click()
            playwright_expect(page.locator("#configuration")).to_contain_text(
                "shown to administrators"
            )
            browser.assert_stayed_home()
        # The buttons are hidden, and the server refuses the action anyway.
        refused = httpx.post(
            f"{url}{GROUPS}/Line2/clientsessions/opcua-a/roleoverride",
            json={"Value": "Primary"},
            auth=VIEWER,
        )
        assert refused.status_code == 403
    finally:
        beats.close()


@pytest.mark.browser
@browser_test
def test_browser_shows_the_refusal_when_an_administrator_is_demoted(
    cluster: Cluster, admin: httpx.Client
) -> None:
    url = cluster.urls[0]
    make_group(admin, url, "Line3", ["opcua-a", "opcua-b"])
    try:
        with chromium(url) as browser:
            page = browser.page
            browser.login(OPERATOR)
            page.evaluate("window.location.hash = '#/group/Line3'")
            playwright_expect(page.locator("#sessions tr[data-session='opcua-b']")).to_be_visible()
            demoted = admin.put(url + "/api/v1/users/operator", json={"Role": "users"})
            assert demoted.status_code == 200, demoted.text
            page.get_by_role("button", name="Make opcua-b Primary…").click()
            page.locator("#confirm").get_by_role("button", name="Make opcua-b Primary").click()
            outcome = page.locator("#group-outcome")
            playwright_expect(outcome).to_contain_text("Refused — 403")
            playwright_expect(outcome).to_contain_text(
                "'operator' is not in the administrators role"
            )
            assert (
                admin.get(f"{url}{GROUPS}/Line3/clientsessions/opcua-b").json()["RoleOverride"] == 0
            )
            browser.assert_stayed_home(allowed_errors=("status of 403",))
    finally:
        admin.put(url + "/api/v1/users/operator", json={"Role": "administrators"})


@contextmanager
def haproxy(cluster: Cluster, workdir: Path) -> Iterator[str]:
    """compose/haproxy.cfg in front of the cluster, its listeners moved to loopback ports."""
    assert HAPROXY is not None
    front, stats = free_ports(2)
    config = (Path(__file__).resolve().parents[2] / "compose" / "haproxy.cfg").read_text()
    config = re.sub(r"^resolvers docker\n(?:[ \t]+.*\n)+", "", config, flags=re.M)
    config = config.replace(" resolvers docker", "").replace("log stdout", "log stderr")
    config = config.replace("bind :5590", f"bind 127.0.0.1:{front}").replace(
        "bind :8404", f"bind 127.0.0.1:{stats}"
    )
    for node in cluster.nodes:
        config = config.replace(
            f"{node.node_id.replace('n', 'cfs')}:5590", f"127.0.0.1:{node.api_port}"
        )
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    with (workdir / "haproxy.log").open("wb") as log:
        proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=log, stderr=log)
    origin = f"http://127.0.0.1:{front}"
    try:
        with httpx.Client(timeout=2) as client:
            wait_for(
                lambda: _answers(client, origin + "/readyz"), "HAProxy in front of the cluster"
            )
        yield origin
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.browser
@browser_test
@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
def test_browser_through_haproxy(cluster: Cluster, admin: httpx.Client, tmp_path: Path) -> None:
    url = cluster.urls[0]
    make_group(admin, url, "Line4", ["opcua-a", "opcua-b"])
    beats = Heartbeats(cluster.urls, "Line4", {"opcua-a": 100, "opcua-b": 80})
    try:
        wait_for(lambda: primary_of(admin, url, "Line4") == "opcua-a", "Line4's first Primary")
        with haproxy(cluster, tmp_path) as origin, chromium(origin) as browser:
            browser.login(ADMIN)
            cell = browser.row("Line4").locator("[data-column=Primary] .name")
            playwright_expect(cell).to_have_text("opcua-a")
            override = admin.post(
                f"{url}{GROUPS}/Line4/clientsessions/opcua-b/roleoverride",
                json={"Value": "Primary"},
            )
            assert override.status_code == 200, override.text
            playwright_expect(cell).to_have_text("opcua-b", timeout=15_000)
            browser.assert_stayed_home()
    finally:
        beats.close()
