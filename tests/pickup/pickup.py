#!/usr/bin/python3
"""Collects a bundle from the pickup page in headless Chromium (Debian
`chromium` + `chromium-driver`, Python `selenium`), as the admin would: opens
the link from the mail, types the code, reads the password the page shows,
downloads the `.p12`, then opens the link again. Run by the Rust e2e test
`pickup_in_headless_chromium`, always under a time limit.

    pickup.py URL CODE DOWNLOAD_DIR

Prints one JSON object: the password, the downloaded file, and what the
second visit showed.
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL, CODE, DOWNLOADS = sys.argv[1:4]


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic"):
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


def replaced(element):
    """Like EC.staleness_of, for a page the browser has already navigated
    away from: Chromium may then answer "Node with given id does not belong
    to the document" (a WebDriverException) instead of a stale reference."""
    def check(_driver):
        try:
            element.is_enabled()
            return False
        except WebDriverException:
            return True
    return check


def h1(driver):
    WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.TAG_NAME, "h1")))
    return driver.find_element(By.TAG_NAME, "h1").text


driver = browser()
try:
    driver.get(URL)
    first = h1(driver)
    field = driver.find_element(By.NAME, "code")
    # Typed as a person reads it aloud: lower case, spaces for dashes.
    field.send_keys(CODE.lower().replace("-", " "))
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "collect").click()
    WebDriverWait(driver, 30).until(replaced(old))
    collected = h1(driver)
    password = driver.find_element(By.ID, "password").text
    link = driver.find_element(By.ID, "download")
    name = link.get_attribute("download")
    link.click()
    path = os.path.join(DOWNLOADS, name)
    deadline = time.time() + 20
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.1)
    # The link again: the bundle was handed out once.
    driver.get(URL)
    second = h1(driver)
    second_text = driver.find_element(By.TAG_NAME, "main").text
    print(json.dumps({
        "first": first,
        "collected": collected,
        "password": password,
        "file": path if os.path.exists(path) else None,
        "second": second,
        "second_text": second_text,
    }))
finally:
    driver.quit()
