"""Make the user guide's screenshots (docs/images/) from a fresh demo workspace.

    python docs/screenshots.py            # about two minutes on 2 cores

What it does, as a user would: in a temporary folder with a copy of configs/, `echo-os plan` the
vision's first project, run two `echo-os batch`es and one `refine`, build the gallery, start
`echo-os ui` (the Dagster web UI) on a free loopback port, and photograph the asset lineage, the
`generated_images` materialization (its metadata and thumbnail grid), the project's runs and the
gallery (grid and detail view) in headless Debian chromium through playwright. Dagster shows a
"Join the community" dialog on the first page load of a new instance; it is skipped like a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
PROJECT = "Ruzgar NFT Collection"
SLUG = "ruzgar-nft-collection"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def echo_os(work: Path, env: dict[str, str], *args: str) -> str:
    command = [str(Path(sys.executable).parent / "echo-os"), *args]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"echo-os {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_ui(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"echo-os ui exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the Dagster UI did not answer on {url} within {timeout:.0f} s")


def skip_community_dialog(page) -> None:
    """Dagster's first-load dialog covers the page; it comes once per instance, not on every page."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=8000)
    except Exception:
        return
    skip.click()
    page.wait_for_timeout(500)


def photograph_ui(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.goto(f"{url}/asset-groups")
        skip_community_dialog(page)
        page.get_by_text("generated_images").first.wait_for()
        page.wait_for_timeout(2500)  # the graph lays itself out and fits the view
        page.screenshot(path=str(OUT / "dagster-lineage.png"))

        page.goto(f"{url}/assets/generated_images?partition={SLUG}")
        page.get_by_text("images_per_minute").wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(OUT / "dagster-materialization.png"))
        page.locator("tr", has_text="preview").get_by_text("[Show Markdown]").click()
        page.get_by_role("dialog").get_by_role("img").first.wait_for()
        page.wait_for_timeout(800)
        page.screenshot(path=str(OUT / "dagster-thumbnails.png"))
        page.keyboard.press("Escape")

        page.goto(f"{url}/runs")
        page.get_by_text("batch").first.wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "dagster-runs.png"))
        browser.close()


def photograph_gallery(gallery: Path, child_id: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto((gallery / "index.html").as_uri())
        page.locator("img").nth(8).wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "gallery-grid.jpg"), quality=82)  # photos: JPEG is 5x smaller
        page.goto((gallery / "index.html").as_uri() + f"#id={child_id}")
        page.get_by_role("dialog").wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(OUT / "gallery-detail.jpg"), quality=82)
        browser.close()


def main() -> None:
    if not CHROMIUM:
        raise SystemExit("no chromium here: apt-get install chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="echo-screens-") as tmp:
        work = Path(tmp)
        shutil.copytree(REPO / "configs", work / "configs", ignore=shutil.ignore_patterns("projects"))
        (work / "configs" / "projects").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "DAGSTER_"))}
        env["COLUMNS"] = "200"
        echo_os(work, env, "plan", PROJECT, "warm fractal, no human forms")
        for _ in range(2):
            echo_os(work, env, "batch", "--project", "Ruzgar NFT", "--count", "12", "--style", "digital art")
        listing = json.loads(echo_os(work, env, "artifacts", "list", "--project", "Ruzgar NFT", "--json"))
        child = json.loads(echo_os(work, env, "refine", listing[0]["artifact_id"], "add rain effects", "--json"))
        echo_os(work, env, "gallery", "--project", "Ruzgar NFT")
        photograph_gallery(work / "artifacts" / "projects" / SLUG / "gallery", child["artifact_id"])

        port = free_port()
        ui = subprocess.Popen([str(Path(sys.executable).parent / "echo-os"), "ui", "--port", str(port)], cwd=work,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_ui(url, ui)
            photograph_ui(url)
        finally:
            os.killpg(ui.pid, signal.SIGTERM)
            try:
                ui.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
    for path in sorted(OUT.glob("*.*")):
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
