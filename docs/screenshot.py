"""Take the README's screenshot: a Label Studio task with our model's prediction.

Not part of the package or the tests. Needs Debian's chromium + chromium-driver and
``pip install selenium``; run it against a stack started by ``agile up``::

    python docs/screenshot.py --url http://127.0.0.1:PORT --user admin@agile.local --password PW \
        --project 1 --task 21 --output task.png
    python docs/screenshot.py ... --project 3 --task 31 --click Disagree --output docs/deliberation-task.png
"""

from __future__ import annotations

import argparse
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--task", type=int, required=True)
    parser.add_argument("--output", default="screenshot.png")
    parser.add_argument("--click", help="click the control with this label first (e.g. Disagree)")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{args.url}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(args.user)
        driver.find_element(By.NAME, "password").send_keys(args.password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        time.sleep(3)
        driver.get(f"{args.url}/projects/{args.project}/data?task={args.task}")
        time.sleep(12)  # the labeling UI loads the task, its image and the prediction
        if args.click:
            target = driver.find_element(By.XPATH, f"//*[normalize-space(text())='{args.click}']")
            driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", target)
            time.sleep(2)
        driver.save_screenshot(args.output)
    finally:
        driver.quit()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
