#!/usr/bin/python3
"""Drives the operator console in headless Chromium (Debian `chromium` +
`chromium-driver`, Python `selenium`), as a person at a support desk would,
keyboard included. Run by the Rust e2e test `console_in_headless_chromium`,
which prepares the CA, checks what this script reports with OpenSSL, and
always runs it under a time limit.

    console.py BASE_URL ADMIN_TOKEN OPERATOR_A_TOKEN TENANT_B_SERIAL DOWNLOAD_DIR SCREENSHOT_DIR

Prints one JSON object: what was issued, reissued and revoked, and what the
tenant-A operator saw.
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, ADMIN_TOKEN, OPERATOR_TOKEN, B_SERIAL, DOWNLOADS, SHOTS = sys.argv[1:7]


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": DOWNLOADS,
        "download.prompt_for_download": False,
    })
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": DOWNLOADS})
    return driver


def shot(driver, name):
    # Full page height, so a screenshot shows the whole page.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, max(700, min(height + 40, 2400)))
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))
    driver.set_window_size(1366, 900)


def h1(driver):
    WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.TAG_NAME, "h1")))
    return driver.find_element(By.TAG_NAME, "h1").text


def replaced(old):
    """A wait condition: `old` (an element) is no longer in the current page.
    ChromeDriver reports this either as a stale reference or as an unknown
    node, depending on timing: both mean the page was replaced."""
    def gone(_driver):
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            return True
    return gone


def submit(driver, button):
    """Clicks a submit button and waits until the next page has replaced this one."""
    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 20).until(replaced(old))
    h1(driver)


def sign_in_by_keyboard(driver, token):
    """Only keys: the token field has focus on load, Enter submits."""
    driver.get(BASE + "/ui/sign-in")
    # Browsers run autofocus after the first rendering, not at load: wait for it.
    WebDriverWait(driver, 5).until(
        lambda d: d.switch_to.active_element.get_attribute("id") == "token",
        "the token field is not focused on load")
    active = driver.switch_to.active_element
    active.send_keys(token)
    old = driver.find_element(By.TAG_NAME, "html")
    active.send_keys(Keys.ENTER)
    WebDriverWait(driver, 20).until(replaced(old))
    assert h1(driver) == "Search certificates", driver.find_element(By.TAG_NAME, "main").text


def wait_for_file(name, timeout=20):
    path = os.path.join(DOWNLOADS, name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return path
        time.sleep(0.1)
    raise AssertionError("no download %s; the folder has %s" % (name, os.listdir(DOWNLOADS)))


def serial_in_notice(driver):
    return driver.find_element(By.CSS_SELECTOR, "p.notice code").text


report = {}
driver = browser()
try:
    # --- the sign-in page, then a signed-in admin
    driver.get(BASE + "/ui/sign-in")
    shot(driver, "sign-in")
    sign_in_by_keyboard(driver, ADMIN_TOKEN)
    cookies = {c["name"]: c for c in driver.get_cookies()}
    report["cookie"] = {k: cookies["ca_console"].get(k) for k in ("httpOnly", "sameSite", "secure", "path")}

    # Keyboard: Tab from the top reaches the skip link first, then the navigation.
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    report["first_tab"] = driver.switch_to.active_element.text

    # --- issue a first certificate for acme/alice and download the bundle
    driver.get(BASE + "/ui/tenants/acme/admins/alice")
    shot(driver, "admin-new")
    issue = driver.find_element(By.CSS_SELECTOR, "form[action$='/issue']")
    Select(issue.find_element(By.NAME, "policy")).select_by_value("portal-admin")
    submit(driver, issue.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert h1(driver) == "Certificate issued", h1(driver)
    report["issued"] = serial_in_notice(driver)
    report["password"] = driver.find_element(By.ID, "password").text
    driver.find_element(By.ID, "download").click()
    report["bundle"] = wait_for_file("acme-alice.p12")
    shot(driver, "issued")

    # --- a bad password: the API's message next to the field, nothing issued
    driver.get(BASE + "/ui/tenants/acme/admins/carol")
    issue = driver.find_element(By.CSS_SELECTOR, "form[action$='/issue']")
    issue.find_element(By.NAME, "password").send_keys("short")
    submit(driver, issue.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    report["bad_password_error"] = driver.find_element(By.ID, "password-error").text
    report["bad_password_invalid"] = driver.find_element(By.ID, "password").get_attribute("aria-invalid")
    report["carol_rows_after_error"] = len(driver.find_elements(By.CSS_SELECTOR, "main table tbody tr"))
    shot(driver, "field-error")

    # --- reissue with key-compromise: the confirmation names what is revoked
    driver.get(BASE + "/ui/tenants/acme/admins/alice")
    shot(driver, "admin")
    reissue = driver.find_element(By.CSS_SELECTOR, "form[action$='/reissue']")
    Select(reissue.find_element(By.NAME, "reason")).select_by_value("key-compromise")
    submit(driver, reissue.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    report["confirmation"] = driver.find_element(By.ID, "will-revoke").text
    report["confirmation_table"] = driver.find_element(By.CSS_SELECTOR, "main table").text
    shot(driver, "reissue-confirm")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form[action$='/reissue'] button.danger"))
    assert h1(driver) == "Certificate reissued", h1(driver)
    report["reissued"] = serial_in_notice(driver)
    report["reissue_revoked"] = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "main ul li")]
    report["reissue_password"] = driver.find_element(By.ID, "password").text

    # --- revoke the new one (with a confirmation page)
    driver.get(BASE + "/ui/certificates/" + report["reissued"])
    submit(driver, driver.find_element(By.LINK_TEXT, "Revoke…"))
    Select(driver.find_element(By.NAME, "reason")).select_by_value("affiliation-changed")
    shot(driver, "revoke-confirm")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "main button.danger"))
    report["revoked_notice"] = driver.find_element(By.ID, "revoked").text

    # --- the other pages, for the README
    driver.get(BASE + "/ui/?tenant=acme")
    shot(driver, "search")
    driver.get(BASE + "/ui/expiring?days=400")
    report["expiring_admin"] = driver.find_element(By.TAG_NAME, "main").text
    shot(driver, "expiring")
    driver.get(BASE + "/ui/status")
    report["crl_number"] = driver.find_element(By.CSS_SELECTOR, "tbody tr:first-child td.crl-number").text
    shot(driver, "status")
    driver.get(BASE + "/ui/audit")
    shot(driver, "audit")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/ui/audit/verify'] button"))
    report["verify"] = driver.find_element(By.ID, "verify-result").text
    driver.get(BASE + "/ui/tokens")
    shot(driver, "tokens")

    # --- an operator scoped to tenant acme sees nothing of tenant globex
    driver.get(BASE + "/ui/")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/ui/sign-out'] button"))
    assert h1(driver) == "Sign in", h1(driver)
    driver.get(BASE + "/ui/")
    report["after_sign_out"] = h1(driver)
    sign_in_by_keyboard(driver, OPERATOR_TOKEN)
    operator = {}
    operator["nav"] = driver.find_element(By.CSS_SELECTOR, "header nav").text
    driver.get(BASE + "/ui/?status=")
    operator["all_search"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(BASE + "/ui/?tenant=globex")
    operator["globex_search"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(BASE + "/ui/?serial=" + B_SERIAL)
    operator["globex_serial"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(BASE + "/ui/tenants/globex/admins/bob")
    operator["globex_admin"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(BASE + "/ui/expiring?days=3650")
    operator["expiring"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(BASE + "/ui/tokens")
    operator["tokens"] = driver.find_element(By.TAG_NAME, "main").text
    driver.get(BASE + "/ui/audit")
    operator["audit"] = driver.find_element(By.TAG_NAME, "main").text
    report["operator"] = operator
except Exception:
    sys.stderr.write("page at failure: %s\n%s\n" % (driver.current_url, driver.page_source[:4000]))
    raise
finally:
    driver.quit()

print(json.dumps(report))
