"""leaderboard.html in a real browser: headless Chromium renders every table row and loads every figure.

A copy of the page gets a script that, on the load event, measures every table row and every <img> and writes the
result into the DOM, which `chromium --dump-dom` prints. Needs Debian's `chromium` package (`.ci/run` installs it
when it runs as root); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from leaderboard.bench import fabricate_eval_set, fabricate_run
from leaderboard.report import write_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`apt-get install chromium`; .ci/run does it as root)"
)
# Flags that work on these machines: no sandbox as root, no GPU, no network side traffic, a fresh profile.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000", "--dump-dom")
PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const out = {
    tables: [...document.querySelectorAll('table')].map(t => ({id: t.id, rows: [...t.querySelectorAll('tr')].map(box)})),
    images: [...document.querySelectorAll('img')].map(i => ({alt: i.alt, complete: i.complete,
                                                            natural: [i.naturalWidth, i.naturalHeight], box: box(i)}))};
  const pre = document.createElement('pre');
  pre.id = 'genshift-render-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


class _Counter(HTMLParser):
    """Rows per table id and the number of <img> in the page source."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, int] = {}
        self.images = 0
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id", "")
            self.rows[self._table] = 0
        elif tag == "tr" and self._table is not None:
            self.rows[self._table] += 1
        elif tag == "img":
            self.images += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def _render(page: Path, tmp: Path) -> dict:
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="genshift-render-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no render check (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _broken(result: dict) -> list[str]:
    bad = [f"table {t['id']} row {i}: {w}x{h}" for t in result["tables"] for i, (w, h) in enumerate(t["rows"])
           if w <= 0 or h <= 0]
    bad += [f"image {im['alt']!r}: complete={im['complete']} natural={im['natural']} box={im['box']}"
            for im in result["images"]
            if not im["complete"] or min(im["natural"]) <= 0 or min(im["box"]) <= 0]
    return bad


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    es = fabricate_eval_set(600, 3, per_window=2)
    runs = [fabricate_run(root / f"cfg__seed{s}", es, skill=0.8, seed=s, detector="tiny_tune", initial=True)
            for s in range(2)]
    runs.append(fabricate_run(root / "full", es, skill=0.8, seed=0, detector="tiny_tune", benchmark_type="full"))
    runs.append(fabricate_run(root / "other", es, skill=0.4, seed=0, detector="other_probe"))
    write_leaderboard(runs, root / "lb", echo=False, n_replicates=30, per_seed=True)
    return root / "lb" / "leaderboard.html"


def test_every_row_and_figure_renders(page, tmp_path):
    source = _Counter()
    source.feed(page.read_text())
    assert {"leaderboard", "calibration", "upper-bound", "per-seed"} <= set(source.rows)
    result = _render(page, tmp_path)
    rendered = {t["id"]: len(t["rows"]) for t in result["tables"]}
    assert rendered == source.rows  # every table and every row of the page is in the rendered DOM
    assert len(result["images"]) == source.images == len(list(page.parent.glob("*.png")))
    assert _broken(result) == []


def test_a_broken_figure_is_caught(page, tmp_path):
    text = page.read_text()
    damaged = tmp_path / "damaged.html"
    damaged.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src="data:image/png;base64,AAAA"', text,
                              count=1))
    broken = _broken(_render(damaged, tmp_path))
    assert len(broken) == 1 and "NEXT per window" in broken[0]
