"""The /ui playground in a real browser (Debian's Chromium driven by selenium):
chat with streaming, stop, the live metrics plot, the model card, and the
API-key prompt. Screenshots go to target/client-tests/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from support import API_KEY, CAPITAL_QUESTION, Metrics, wait_idle

SHOTS = Path(__file__).resolve().parents[2] / "target" / "client-tests"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver (tests/clients/run.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The closed network refuses Chromium's background connections; keep it quiet.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=60.0, what="condition"):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))
    except Exception as e:  # selenium's TimeoutException carries no message of ours
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {e}")


def set_value(driver, element_id, value):
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input'));", element_id, str(value))


def open_ui(driver, url):
    driver.get(url + "/ui")
    wait_for(driver, lambda d: d.find_element(By.ID, "model-name").text not in ("", "…"), 30, "the model name")


def last_assistant(driver) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, ".message.assistant .content")
    return found[-1].text if found else ""


def send(driver, text):
    box = driver.find_element(By.ID, "chat-input")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "chat-send").click()


def test_ui_is_served_without_cdn_and_leaves_root_alone(server):
    page = httpx.get(server.url + "/ui/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("app.js", "style.css"):
        r = httpx.get(f"{server.url}/ui/{asset}", timeout=10)
        assert r.status_code == 200 and "https://" not in r.text
    assert httpx.get(server.url + "/ui", timeout=10, follow_redirects=False).status_code == 308
    # `/` stays Ollama's liveness probe.
    assert httpx.get(server.url + "/", timeout=10).text.strip() == "Ollama is running"


def test_chat_streams_an_answer(browser, server):
    open_ui(browser, server.url)
    set_value(browser, "temperature", 0)
    set_value(browser, "max-tokens", 48)
    send(browser, CAPITAL_QUESTION)
    wait_for(browser, lambda d: "Paris" in last_assistant(d), 60, "an answer containing Paris")
    wait_for(browser, lambda d: d.find_element(By.ID, "chat-send").is_enabled(), 60, "the stream to end")
    assert "first token" in browser.find_element(By.ID, "chat-stats").text
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "playground-chat.png"))


def test_stop_ends_a_long_generation(browser, server):
    open_ui(browser, server.url)
    browser.find_element(By.ID, "chat-clear").click()
    set_value(browser, "temperature", 0.8)
    set_value(browser, "max-tokens", 1500)
    send(browser, "Tell me a very long story about a dragon.")
    wait_for(browser, lambda d: len(last_assistant(d)) > 40, 60, "the story to start streaming")
    assert Metrics(server.url).value("vllm:num_requests_running") == 1
    browser.find_element(By.ID, "chat-stop").click()
    wait_for(browser, lambda d: last_assistant(d).endswith("[stopped]"), 10, "the stopped marker")
    # The running gauge returns to 0 and the request's KV blocks are freed.
    wait_idle(server.url, timeout=10)
    stopped = last_assistant(browser)
    time.sleep(1.0)
    assert last_assistant(browser) == stopped, "text kept arriving after stop"


def test_metrics_panel_plots_tokens_per_second(browser, server):
    open_ui(browser, server.url)
    browser.find_element(By.CSS_SELECTOR, "button.tab[data-view=metrics]").click()
    # Traffic for the plot: a streamed chat from the page itself.
    browser.find_element(By.CSS_SELECTOR, "button.tab[data-view=chat]").click()
    set_value(browser, "max-tokens", 200)
    send(browser, "Write a poem about the sea.")
    browser.find_element(By.CSS_SELECTOR, "button.tab[data-view=metrics]").click()
    wait_for(browser, lambda d: int(d.find_element(By.ID, "plot-tps").get_attribute("data-nonzero") or 0) > 0,
             60, "a non-empty tokens/s plot")
    assert float(browser.find_element(By.ID, "now-tps").text or 0) >= 0
    browser.save_screenshot(str(SHOTS / "playground-metrics.png"))
    wait_for(browser, lambda d: d.find_element(By.ID, "chat-send").is_enabled(), 120, "the poem to end")


def test_model_card_shows_the_served_model(browser, server):
    open_ui(browser, server.url)
    browser.find_element(By.CSS_SELECTOR, "button.tab[data-view=model]").click()
    card = wait_for(browser, lambda d: d.find_element(By.ID, "model-card").text or None, 30, "the model card")
    assert "LlamaForCausalLM" in card and "Context" in card and "KV cache" in card
    browser.save_screenshot(str(SHOTS / "playground-model.png"))


def test_phone_sized_screen_keeps_everything_reachable(browser, server):
    browser.set_window_size(390, 844)
    try:
        open_ui(browser, server.url)
        for element_id in ("chat-input", "chat-send", "temperature"):
            el = browser.find_element(By.ID, element_id)
            assert el.is_displayed()
            assert el.rect["x"] >= 0 and el.rect["x"] + el.rect["width"] <= 390 + 1, element_id
        browser.save_screenshot(str(SHOTS / "playground-phone.png"))
    finally:
        browser.set_window_size(1280, 900)


def test_api_key_is_asked_for_and_used(browser, auth_server):
    browser.get(auth_server.url + "/ui")
    # Without the key the page says so and asks for it.
    wait_for(browser, lambda d: d.find_element(By.ID, "key-form").is_displayed(), 30, "the key prompt")
    assert "API key" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "key-input").send_keys("wrong-key")
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "key-form").is_displayed(), 30, "the key prompt again")
    browser.find_element(By.ID, "key-input").send_keys(API_KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "model-name").text not in ("", "…"), 30, "the model name")
    set_value(browser, "temperature", 0)
    set_value(browser, "max-tokens", 48)
    send(browser, CAPITAL_QUESTION)
    wait_for(browser, lambda d: "Paris" in last_assistant(d), 60, "an answer with the key")
    stored = browser.execute_script("return sessionStorage.getItem('kiln-api-key')")
    assert stored == API_KEY
    browser.execute_script("sessionStorage.clear()")


def test_no_ui_turns_it_off(kiln_factory):
    s = kiln_factory("kiln-serve-no-ui", "--no-ui")
    assert httpx.get(s.url + "/ui/", timeout=10).status_code == 404
