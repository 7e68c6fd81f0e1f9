"""Headless Chromium renders the asset graph page of the running UI: wait until the graph is drawn, check its
text, take a screenshot and check it is a real picture.

Chromium comes from Debian (`apt-get install chromium`, done by `make test` when missing). It is driven over the
DevTools protocol (the `websockets` client is already pinned), so the test waits for the graph's data
instead of guessing a fixed delay."""

import base64
import json
import re
import shutil
import subprocess
import time

import numpy as np
from PIL import Image
from websockets.sync.client import connect

# The raw group's lineage page: its four assets as full nodes, their downstream assets as links.
GRAPH_ASSETS = ["raw_items", "raw_users", "raw_interactions", "interaction_log", "catalog_embeddings"]



def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("no chromium on PATH: install it (`apt-get install -y chromium`; `make test` does as root)")


class Page:
    """The first tab of a headless Chromium, over the DevTools protocol."""

    def __init__(self, profile_dir):
        self.process = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--hide-scrollbars", "--no-first-run", "--window-size=1600,1000", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        browser_url = None
        while browser_url is None:
            line = self.process.stderr.readline()
            assert line or self.process.poll() is None, "chromium exited before DevTools came up"
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            browser_url = match.group(1) if match else None
            assert time.monotonic() < deadline, "chromium DevTools did not come up in 60 s"
        port = re.search(r"ws://[^:]+:(\d+)/", browser_url).group(1)
        import requests

        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message["error"]
                return message["result"]

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return result["result"].get("value", "")

    def close(self):
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=20)


def test_asset_graph_page_renders_the_pipeline(dagster_server, tmp_path):
    from .conftest import LOCATION_QUERY

    location = dagster_server.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"][0]["name"]
    # what the "Join the Dagster community" dialog's Skip button does, so it never covers the graph
    assert dagster_server.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    page = Page(tmp_path / "profile")
    try:
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=f"{dagster_server.url}/locations/{location}/asset-groups/raw")
        deadline = time.monotonic() + 120
        while True:
            text = page.text()
            missing = [name for name in GRAPH_ASSETS if name not in text]
            if not missing and "Join the Dagster community" not in text and "Asset checks" in text:
                break
            assert time.monotonic() < deadline, f"asset graph lacks {missing} after 120 s; page text:\n{text[:1500]}"
            time.sleep(1)
        time.sleep(2)  # let the layout settle (edges, fit-to-screen) before the picture
        assert "Join the Dagster community" not in page.text()
        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    finally:
        page.close()

    path = tmp_path / "asset_graph.png"  # kept in the test's tmp dir for a look
    path.write_bytes(shot)
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert image.shape == (1000, 1600)
    # a drawn graph, not a blank or error page: many grey levels and real contrast
    assert len(np.unique(image)) > 20 and image.std() > 10
    assert "Asset Group in" in text and location in text
