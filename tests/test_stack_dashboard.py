"""The dashboard in headless Chromium (Debian's chromium and chromium-driver) against the real
stack: start a job from the page, watch its tree fill in live, read a task's output, cancel a
slow job. Screenshots of each step go to test-artefacts/dashboard/ (the test prints where)."""

import shutil
import tempfile

import pytest

from cameron.config import ROOT
from conftest import start_engine, stop_engine

pytestmark = pytest.mark.stack

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = ROOT / "test-artefacts" / "dashboard"
TOKEN = "dashboard-test-token"


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (./run.sh test installs them as root)")
    profile = tempfile.mkdtemp(prefix="cam-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {SHOTS}")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver, predicate, what: str, timeout: float = 20):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: predicate(d), message=f"waiting for {what}")


def texts(driver, selector: str) -> list[str]:
    # Read in one script: the page redraws rows as events come, so held elements go stale.
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector)


def states(driver) -> list[str]:
    """The state word of every task in the tree, in the order drawn."""
    return texts(driver, ".tree .task > summary .badge")


def job_state(driver) -> str:
    return "".join(texts(driver, ".job .state .badge"))


def start_from_page(driver, process: str, key: str):
    wait(driver, lambda d: process in texts(d, "#start-form select[name=process] option"), "the catalog in the form")
    form = driver.find_element(By.ID, "start-form")
    Select(form.find_element(By.NAME, "process")).select_by_visible_text(process)
    form.find_element(By.NAME, "key").send_keys(key)
    form.find_element(By.NAME, "data").send_keys("from the browser")
    form.find_element(By.TAG_NAME, "button").click()
    wait(driver, lambda d: "#/job/" in d.current_url, "the job page")
    return driver.current_url.rsplit("/", 1)[1]


def test_start_watch_open_output_and_cancel(engine, browser):
    d = browser
    d.get(engine.base_url + "/")
    wait(d, lambda d: d.find_elements(By.XPATH, "//table[@class='catalog']//a[text()='foo']"), "the catalog")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".catalog .counts-cell .badge"), "the job counts")
    d.save_screenshot(str(SHOTS / "1-home.png"))
    d.execute_script("window.notReloaded = true")

    # foo from the page: the tree fills in to done, without a reload.
    uuid = start_from_page(d, "foo", "browser-foo")
    wait(d, lambda d: job_state(d) == "done" and states(d) == ["done"] * 7, "foo's 7 tasks done")
    assert d.execute_script("return window.notReloaded") is True
    names = texts(d, ".tree .task > summary .name")
    assert names[0] == "start" and sorted(names) == sorted(
        t["name"] for t in engine.http.get(f"{engine.base_url}/api/job/{uuid}", timeout=10).json()["tasks"])
    # act_5_sub_1 is drawn under act_5, which is under start.
    nested = d.find_elements(By.XPATH, "//li[.//span[@class='name' and text()='start']]//ul//li"
                                       "[.//span[@class='name' and text()='act_5']]//ul//span[text()='act_5_sub_1']")
    assert nested, "the tree nests act_5_sub_1 under act_5 under start"
    d.save_screenshot(str(SHOTS / "2-foo-done.png"))

    # A task's output, opened from the keyboard.
    summary = d.find_element(By.XPATH, "//summary[.//span[@class='name' and text()='act_1']]")
    summary.send_keys(" ")  # a summary is a button: Space opens it
    wait(d, lambda d: summary.find_element(By.XPATH, "..").find_elements(By.CSS_SELECTOR, ".out pre"),
         "act_1's output")
    output = summary.find_element(By.XPATH, "..").find_element(By.CSS_SELECTOR, ".out pre").text
    assert output.strip(), "the output is shown"
    d.save_screenshot(str(SHOTS / "3-task-output.png"))

    # A slower chain, watched while it runs: tasks appear and end one by one.
    d.get(engine.base_url + "/#/")
    wait(d, lambda d: d.find_elements(By.ID, "start-form"), "the home page")
    d.execute_script("window.notReloaded = true")
    start_from_page(d, "slowchain", "browser-chain")
    wait(d, lambda d: "running" in states(d) and "done" in states(d), "a chain half done")
    d.save_screenshot(str(SHOTS / "4-chain-running.png"))
    wait(d, lambda d: job_state(d) == "done" and states(d) == ["done"] * 6, "the chain done")
    assert d.execute_script("return window.notReloaded") is True

    # Cancel a slow job from the page: it ends cancelled.
    d.get(engine.base_url + "/#/")
    wait(d, lambda d: d.find_elements(By.ID, "start-form"), "the home page")
    start_from_page(d, "slow", "browser-slow")
    wait(d, lambda d: states(d) == ["running"], "the slow task running")
    d.find_element(By.ID, "cancel").click()
    wait(d, lambda d: job_state(d) == "cancelled", "the job cancelled")
    d.save_screenshot(str(SHOTS / "5-cancelled.png"))

    # The list shows them, filtered by status; and the page on a phone-sized screen.
    d.get(engine.base_url + "/#/?process=slow&status=cancelled")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, ".jobs tbody .badge.s-cancelled"), "the cancelled job listed")
    d.execute_script("document.getElementById('start-title').scrollIntoView()")
    d.save_screenshot(str(SHOTS / "6-list-cancelled.png"))
    d.set_window_size(390, 844)
    d.get(engine.base_url + f"/#/job/{uuid}")
    wait(d, lambda d: states(d) == ["done"] * 7, "the foo job on a phone")
    d.save_screenshot(str(SHOTS / "7-phone.png"))


def list_row_state(driver, uuid: str) -> str | None:
    """The state word of a job's row on the list, None while it is not there."""
    return driver.execute_script(
        "const a = document.querySelector(`.jobs a[aria-label='job ${arguments[0]}']`);"
        "return a ? a.closest('tr').querySelector('.badge').textContent : null", uuid)


def list_reads(driver) -> int:
    """How many times the page has read a list of jobs."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => /\\/job\\?/.test(e.name)).length")


def counts_of(driver, process: str) -> list[str]:
    return texts(driver, f".catalog a[aria-label$=' jobs of {process}']")


def test_the_job_list_changes_as_jobs_run_pushed_not_polled(engine, browser):
    d = browser
    d.get(engine.base_url + "/#/?process=slowchain")
    wait(d, lambda d: texts(d, "#list-live") == ["Live: jobs appear and change as they run."], "the list's stream")
    wait(d, lambda d: counts_of(d, "slowchain"), "the counts")
    done_before = next(t for t in counts_of(d, "slowchain") if t.endswith(" done"))
    d.execute_script("window.notReloaded = true")

    # A job started elsewhere joins the list, running, then turns done in place.
    resp = engine.start_job("slowchain", key="listed-live")
    assert resp.status_code == 201, resp.text
    uuid = resp.json()["uuid"]
    wait(d, lambda d: list_row_state(d, uuid) == "running", "the new job on the list, running")
    d.save_screenshot(str(SHOTS / "10-list-running.png"))
    reads = list_reads(d)
    wait(d, lambda d: list_row_state(d, uuid) == "done", "the job done on the list")
    assert list_reads(d) == reads, "its row changed in place, from the stream, not by reading the list again"
    # The catalog's counts follow too.
    done_after = f"{int(done_before.split()[0]) + 1} done"
    wait(d, lambda d: done_after in counts_of(d, "slowchain"), "the done count grown by one")
    d.save_screenshot(str(SHOTS / "11-list-done.png"))
    assert d.execute_script("return window.notReloaded") is True


@pytest.fixture(scope="module")
def wide_engine(short_tmp, redis_server, activities):
    # Tokens on: the page must ask for one before it shows anything.
    engine, web = start_engine(short_tmp / "wide-engine", redis_server.url, activities,
                               CAMERON_MAX_FANOUT="1000", CAMERON_API_TOKENS=f"tester:{TOKEN}")
    catalog = short_tmp / "wide-engine" / "processes.toml"
    catalog.write_text(catalog.read_text() + f'\n[processes.thousand]\nstart = "{activities.url}/lab/fanout/999/0"\n')
    reloaded = engine.cli("processes", "reload")
    try:
        assert reloaded.returncode == 0, reloaded.stderr
        yield engine
    finally:
        stop_engine(engine, web)


def test_with_tokens_the_page_asks_for_one_and_draws_a_job_of_a_thousand_tasks(wide_engine, browser):
    d = browser
    d.get(wide_engine.base_url + "/")
    wait(d, lambda d: d.find_element(By.ID, "token").is_displayed(), "the page to ask for a token")
    assert texts(d, ".catalog tbody tr") == [], "nothing shown without a token"
    d.save_screenshot(str(SHOTS / "8-token.png"))
    field = d.find_element(By.ID, "token-input")
    assert d.switch_to.active_element == field, "the token field has the focus"
    field.send_keys(TOKEN + "\n")
    wait(d, lambda d: "thousand" in texts(d, ".catalog tbody a"), "the catalog, once the token is given")
    start_from_page(d, "thousand", "browser-wide")
    wait(d, lambda d: job_state(d) == "done" and states(d).count("done") == 1000, "1,000 tasks done", timeout=60)
    assert len(texts(d, ".tree > li > ul > li")) == 999, "every child under the start task"
    # One line per task: the tree stays readable (a summary row is no taller than two lines).
    heights = d.execute_script(
        "return [...document.querySelectorAll('.tree .task > summary')].map(e => e.offsetHeight)")
    assert max(heights) <= 2 * min(heights)
    d.save_screenshot(str(SHOTS / "9-thousand-tasks.png"))
