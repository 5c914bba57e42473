"""The web login example (examples/web_login/app.py) in a real headless browser: Debian's
chromium and chromedriver through selenium, against a devnet, ``veil bot serve`` and the
example app as processes. From typing the veil ID to the signed-in page, the code read
from the recipient's inbox. ``./scripts/test`` installs chromium and chromium-driver when
they are missing; without them this test fails (it never skips)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.devnetutil import devnet
from tests.test_gateway_devnet import make_token, start_serve, stop
from veil.client.home import Home
from veil.client.veil_client import open_client
from veil.onion.keys import Account

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(profile: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install -y chromium"
    assert Path(CHROMEDRIVER).exists(), "chromedriver is missing: apt-get install chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@pytest.fixture
def web_login(tmp_path: Path) -> Iterator[tuple[str, Path, Path, Account, str]]:
    with devnet(tmp_path, nodes=3, swarm_size=3) as net:
        home = tmp_path / "bot"
        Home(home).save_identity(Account.generate())
        person_home = tmp_path / "person"
        person = Account.generate()
        Home(person_home).save_identity(person)
        token = make_token(home, net.network_file, "codes")
        gateway, url, bot_id = start_serve(home, net.network_file)
        app = subprocess.Popen(
            [sys.executable, str(REPO / "examples" / "web_login" / "app.py"), "--port", "0"],
            env={"VEIL_GATEWAY": url, "VEIL_GATEWAY_TOKEN": token, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.stdout is not None
            line = app.stdout.readline()
            assert line.startswith("web login on "), line
            yield line.split()[-1], person_home, net.network_file, person, bot_id
        finally:
            stop(app)
            stop(gateway)


async def test_sign_in_with_a_code_in_a_headless_browser(
    web_login: tuple[str, Path, Path, Account, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, person_home, network, person, bot_id = web_login
    driver = browser(tmp_path / "profile")
    try:
        driver.set_page_load_timeout(20)
        driver.get(url)
        driver.find_element(By.ID, "veil_id").send_keys(str(person.id))
        driver.find_element(By.ID, "send").click()
        WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "code")))
        code = ""
        async with open_client(person_home, network) as client:
            with trio.fail_after(30):
                async for message in client.messages():
                    if str(message.sender) == bot_id:
                        code = message.text.split()[0]
                        break
        assert "login code" in message.text
        # A wrong code first: the page says how many attempts are left.
        driver.find_element(By.ID, "code").send_keys("000000" if code != "000000" else "111111")
        driver.find_element(By.ID, "verify").click()
        WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "error")))
        assert "4 attempts left" in driver.find_element(By.ID, "error").text
        driver.find_element(By.ID, "code").send_keys(code)
        driver.find_element(By.ID, "verify").click()
        signed = WebDriverWait(driver, 20).until(
            ec.presence_of_element_located((By.ID, "signed-in"))
        )
        assert signed.text == "Signed in"
        assert str(person.id) in driver.page_source
    finally:
        driver.quit()
