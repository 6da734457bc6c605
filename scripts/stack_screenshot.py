"""Screenshot of a backfill run on the `make up` stack, for the README (docs/img/).

    make up && source .stack/env.sh
    .venv/bin/python -m mup_dagster.stack backfill --model smollm2-135m
    .venv/bin/python scripts/stack_screenshot.py [--run RUN_ID] [--out docs/img/stack_backfill.png]

Opens the run's page (timeline and event log filtered to the Celery hand-offs) in
headless Chromium (Debian's chromium + chromium-driver). Without --run, the latest run
of the latest backfill.
"""

import argparse
import shutil
import time
import urllib.parse
from pathlib import Path

import dagster as dg

from mup_dagster.stack import StackConfig


def latest_backfill_run() -> str:
    with dg.DagsterInstance.get() as instance:
        backfills = instance.get_backfills(limit=1)
        if not backfills:
            raise SystemExit("no backfill on this instance: run `python -m mup_dagster.stack backfill` first")
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfills[0].backfill_id}))
        return runs[0].run_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--out", default="docs/img/stack_backfill.png")
    parser.add_argument("--filter", default="celery worker")
    args = parser.parse_args()
    run_id = args.run or latest_backfill_run()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        from selenium.webdriver.common.by import By

        query = urllib.parse.urlencode({"logs": args.filter}) if args.filter else ""
        driver.get(f"{StackConfig().webserver_url}/runs/{run_id}?{query}")
        time.sleep(8)  # the timeline and the log render after their GraphQL queries
        for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            button.click()  # the first-visit "join the community" dialog
        time.sleep(4)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(f"{args.out}: run {run_id}")


if __name__ == "__main__":
    main()
