"""The status page in a real browser (issue 16): Debian's chromium, driven by its
chromium-driver through selenium, opens the page of an agent running against the simulated
terminal and a real nats-server. A fill appears without a reload; the reference and the
adjusted entry are read from the DOM; the charts are drawn from the vendored uPlot, nothing
is loaded from anywhere but the agent; a screenshot is saved as the test's artifact.

Skipped, saying why, where chromium, chromium-driver or selenium are missing (``./dev test``
installs them)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentHarness
from waiting import wait_for

from mt5fleet.client.adapters.status import bound_port, build_app, serve
from mt5fleet.client.adapters.status_page import price
from mt5fleet.client.app.status_view import agent_status
from mt5fleet.proto import subjects
from mt5fleet.proto.v1 import config_pb2, market_data_pb2

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# A failure, not a skip, when the browser is missing: the page would go untested. ./dev test
# installs Debian's chromium and chromium-driver; selenium comes with the dev extra.
if not (CHROMIUM and CHROMEDRIVER):
    raise RuntimeError("Debian's chromium and chromium-driver are missing: apt-get install chromium chromium-driver "
                       "(./dev test does)")
from selenium import webdriver  # noqa: E402

pytestmark = [pytest.mark.slow]

SCREENSHOT_DIR_ENV = "MT5FLEET_SCREENSHOT_DIR"
SIZING = "risk 1.0% of equity 10,000.00 USD over 50.0 pips SL -> 0.10 lots"


def _browser() -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # A laptop's screen; root in a container needs --no-sandbox, a small /dev/shm the last flag.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


async def _config(h: AgentHarness) -> None:
    """The platform's configuration: the md symbols the agent reads come only from it."""
    config = config_pb2.ClientConfig(user_id=h.user_id, tier_name="pro", trading_symbols=["EURUSD", "GBPUSD"],
                                     monitoring_symbols=["USDJPY"])
    config.risk.max_risk_per_trade = 5.0
    kv = await h.js.key_value(subjects.CONFIG_BUCKET)
    await kv.put(h.user_id, config.SerializeToString())
    await wait_for(lambda: h.agent.effective.tier == "pro", "the platform's configuration applied")


async def _market_data(h: AgentHarness, stop: asyncio.Event) -> None:
    """What the market-data worker would publish: a reference price a little off the
    broker's, and indicators around it."""
    step = 0
    while not stop.is_set():
        step += 1
        for symbol in ("EURUSD", "GBPUSD"):
            tick = h.quote(symbol)
            mid, wave = (tick.bid + tick.ask) / 2, (step % 20 - 10) * 1e-5
            data = market_data_pb2.ClientMarketData(symbol=symbol, bid=tick.bid - 2e-5, ask=tick.ask - 2e-5,
                                                    timestamp=h.now_ms())
            i = data.indicators
            i.sma_20, i.sma_50, i.ema_12, i.ema_26 = mid - 1e-4, mid - 2e-4, mid + wave, mid - 5e-5
            i.bollinger_upper, i.bollinger_middle, i.bollinger_lower = mid + 6e-4, mid - 1e-4, mid - 8e-4
            i.rsi, i.macd_line, i.macd_signal = 50 + step % 30, wave, wave / 2
            data.session.is_open = True
            await h.nc.publish(subjects.market_data_subject(symbol), data.SerializeToString())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def _text(browser: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    elements = browser.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else ""


def _artifact_dir(tmp_path: Path) -> Path:
    import os

    folder = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_fill_appears_live_with_both_entries_and_charts(fresh_nats_server, tmp_path):
    async with AgentHarness(fresh_nats_server, tmp_path) as h:
        await _config(h)
        stop = asyncio.Event()
        feed = asyncio.create_task(_market_data(h, stop))
        await wait_for(lambda: {"EURUSD", "GBPUSD"} <= set(h.agent.market_data.latest), "md for both symbols")
        runner = await serve(build_app(lambda: agent_status(h.agent), h.agent.metrics.registry, update_every_s=0.3),
                             "127.0.0.1", 0)
        url = f"http://127.0.0.1:{bound_port(runner)}/"
        browser = await asyncio.to_thread(_browser)
        try:
            await _check_page(h, browser, url, tmp_path)
        finally:
            await asyncio.to_thread(browser.quit)
            stop.set()
            await feed
            await runner.cleanup()


async def _run(fn: Any, *args: Any) -> Any:
    """Selenium blocks: off the event loop, so the agent keeps running meanwhile."""
    return await asyncio.to_thread(fn, *args)


async def _check_page(h: AgentHarness, browser: Any, url: str, tmp_path: Path) -> None:
    await _run(browser.get, url)
    updates = lambda: int(browser.execute_script("return Number(document.body.dataset.updates || 0)"))  # noqa: E731
    await wait_for(lambda: _run(updates), "the page's first live update", timeout=15)
    await _run(browser.execute_script, "window.__sameDocument = 'yes'")  # gone if the page reloads
    await wait_for(lambda: _run(browser.execute_script,
                                "return document.querySelectorAll('#symbol-charts canvas').length >= 4"),
                   "a price and an indicator chart for both traded symbols", timeout=15)

    # A command whose reference entry differs from the adjusted one, as the worker builds it.
    tick = h.quote("EURUSD")
    reference = round(tick.ask - 0.00012, 5)
    command = h.command(original_entry=reference, price_adjustment=round(tick.ask - reference, 5),
                        adjustment_reason="market order at the user's ask (+12.0 points); SL/TP distances kept",
                        sizing_reason=SIZING)
    before = await _run(updates)
    await h.send(command)
    status_cell = f'tr[data-command-id="{command.command_id}"] td[data-field="status"]'
    await wait_for(lambda: _run(_text, browser, status_cell), "the fill on the page, without a reload", timeout=15)
    assert await _run(_text, browser, status_cell) == "FILLED"
    assert await _run(browser.execute_script, "return window.__sameDocument") == "yes", "the page reloaded"
    assert await _run(updates) > before

    row = f'tr[data-command-id="{command.command_id}"]'
    shown_reference = await _run(_text, browser, f'{row} td[data-field="reference_entry"]')
    shown_adjusted = await _run(_text, browser, f'{row} td[data-field="adjusted_entry"]')
    assert shown_reference == price(reference) and shown_adjusted == price(command.entry_price)
    assert shown_reference != shown_adjusted
    assert "+12.0 points" in await _run(_text, browser, f'{row} td[data-field="adjustment"]')
    lot = await _run(_text, browser, f'{row} td[data-field="lot"]')
    assert lot.startswith("0.1") and "of equity" in lot, lot  # the lot and why
    # Why this lot, in the server's words, as the worker sent it in sizing_reason.
    assert await _run(_text, browser, f'{row} td[data-field="lot"] [data-field="sizing-reason"]') == SIZING
    assert "agent check:" in await _run(_text, browser, f'{row} td[data-field="lot"] [data-field="lot-check"]')
    report = await h.report(command.command_id)
    assert await _run(_text, browser, f'{row} td[data-field="fill"]') == price(report.fill_price)
    assert "ms" in await _run(_text, browser, f'{row} td[data-field="latency"]')
    # The fill is marked on its symbol's chart, and the equity chart has data.
    await wait_for(lambda: _run(lambda: "1 fill shown" in _text(browser, "#chart-EURUSD figcaption")),
                   "the fill marked on the EURUSD chart", timeout=10)
    assert await _run(browser.execute_script, "return document.querySelectorAll('#equity-chart canvas').length")

    await _check_offline_and_accessible(browser)
    shot = _artifact_dir(tmp_path) / "agent-status-page.png"
    await _run(browser.execute_script, "document.getElementById('commands').scrollIntoView()")
    await _run(browser.execute_script, "window.scrollTo(0, 0)")
    await _run(_full_page_screenshot, browser, shot)
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot of the agent's status page: {shot}")


def _full_page_screenshot(browser: Any, path: Path) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1366, min(max(height, 900), 4000))
    browser.save_screenshot(str(path))
    browser.set_window_size(1366, 900)


async def _check_offline_and_accessible(browser: Any) -> None:
    origin = browser.current_url.rstrip("/")
    loaded = await _run(browser.execute_script,
                        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert loaded and all(name.startswith(origin) for name in loaded), loaded  # no CDN: works offline
    facts = await _run(browser.execute_script, """
        return {
          lang: document.documentElement.lang,
          unlabelled: Array.from(document.querySelectorAll('section')).filter(
            function (s) { return !document.getElementById(s.getAttribute('aria-labelledby')); }).length,
          // uPlot's legends are tables inside their labelled figure; the page's own need captions.
          tablesWithoutCaption: Array.from(document.querySelectorAll('table:not(.u-legend)')).filter(
            function (t) { return !t.caption; }).length,
          chartsWithoutLabel: Array.from(document.querySelectorAll('[role=img]')).filter(
            function (c) { return !c.getAttribute('aria-label'); }).length,
          live: document.getElementById('live').getAttribute('aria-live'),
          h1: document.querySelectorAll('h1').length
        };""")
    assert facts == {"lang": "en", "unlabelled": 0, "tablesWithoutCaption": 0, "chartsWithoutLabel": 0,
                     "live": "polite", "h1": 1}, facts
    # Keyboard: the skip link comes first and takes the reader to the commands.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    body = await _run(browser.find_element, By.TAG_NAME, "body")
    await _run(body.send_keys, Keys.TAB)
    assert await _run(browser.execute_script, "return document.activeElement.className") == "skip"
