"""Screenshots of the console for the README, from a live demo with bank offences.

    python -m tests.console.screenshots [OUT_DIR]   (default docs/img)

Runs ``hpf-gateway demo --serve --bank-faults all`` in a temporary directory,
waits for the console's address, and has Chromium (the same launch as the
browser tests) take the overview and one alert's evidence as the province
supervisor, then stops the demo.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.console.support import CHROMIUM, CHROMIUM_ARGS
from tests.kit.procs import HPF, Proc


def main(out: Path) -> int:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        demo = Proc("demo", HPF + ["demo", "--dir", tmp, "--serve", "--count", "300", "--bank-faults", "all",
                                   "--fault-every", "20"], Path(tmp) / "demo.out").start()
        try:
            try:
                url = demo.wait_for(r"the supervision console: (https://localhost:\d+)/", 240).group(1)
            except AssertionError as e:
                print(e, file=sys.stderr)
                return 1
            keys = Path(tmp) / "keys"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(
                    ignore_https_errors=True, locale="zh-CN", viewport={"width": 1280, "height": 900},
                    client_certificates=[{"origin": url, "certPath": str(keys / "supervisor-sup1.crt"),
                                          "keyPath": str(keys / "supervisor-sup1.key")}])
                page = context.new_page()
                page.goto(url + "/")
                page.screenshot(path=str(out / "console-overview.png"), full_page=True)
                page.goto(url + "/alerts?rule=result-mismatch")
                page.locator("#alerts tbody a").first.click()
                page.screenshot(path=str(out / "console-alert.png"), full_page=False)
                browser.close()
            print(f"wrote {out / 'console-overview.png'} and {out / 'console-alert.png'}")
            return 0
        finally:
            demo.stop(30)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
