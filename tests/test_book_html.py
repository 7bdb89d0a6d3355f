"""The browser check of the built book (tools/check_book_html.py).

Static checks run everywhere. The browser tests need Debian's chromium + chromedriver and selenium
and are skipped without them: they load two tiny hand-written sites, one that must pass and one
with one defect of every kind, so each check is shown able to fail. The last test checks the real
book and runs only when ``_build/html`` exists (build it first: ``jupyter-book build .``), or the
folder named by ``$BOOK_HTML`` (e.g. ``_build/smoke/_build/html``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_book_html", ROOT / "tools" / "check_book_html.py")
check = importlib.util.module_from_spec(spec)
sys.modules["check_book_html"] = check
spec.loader.exec_module(check)

needs_browser = pytest.mark.skipif(bool(check.missing_tools()),
                                   reason=f"browser check needs {', '.join(check.missing_tools())}")
MATHJAX = ROOT / "book" / "_static" / "mathjax"


def png(width: int, height: int) -> bytes:
    """A valid grey PNG of the given size (enough to test image decoding without matplotlib)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def page(body: str, head: str = "") -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"{head}</head><body>{body}</body></html>")


MATHJAX_HEAD = ("<script>window.MathJax = {options: {processHtmlClass: 'math', ignoreHtmlClass: 'document'}}"
                "</script><script defer src='/_static/mathjax/tex-mml-chtml.js'></script>")


def good_site(root: Path) -> Path:
    """A site that passes: local MathJax, a decoded image, links with existing anchors."""
    (root / "_static").mkdir(parents=True)
    shutil.copytree(MATHJAX, root / "_static" / "mathjax")
    (root / "figure.png").write_bytes(png(8, 6))
    (root / "index.html").write_text(page(
        "<div class='document'><h1 id='top'>Book</h1>"
        "<p>Inline <span class='math notranslate nohighlight'>\\(\\lambda\\theta + p\\,\\theta_0\\)</span>.</p>"
        "<div class='math notranslate nohighlight'>\\[\\sum_j s_j = 1\\]</div>"
        "<img src='figure.png' alt='a figure'>"
        "<pre>prices in $$ and \\( stay raw inside code</pre>"
        "<a href='chapter.html#results'>results</a> <a href='#top'>top</a> <a href='book/'>book folder</a>"
        "<a href='https://example.org/paper'>an external link is not followed</a></div>", MATHJAX_HEAD))
    (root / "chapter.html").write_text(page("<h2 id='results'>Results</h2><a href='index.html'>back</a>"))
    (root / "redirect.html").write_text("<meta http-equiv='Refresh' content='0; url=chapter.html' />")
    (root / "book").mkdir()
    (root / "book" / "index.html").write_text(page("<p>folder index</p><a href='../index.html#top'>up</a>"))
    return root


def bad_site(root: Path) -> Path:
    """One defect of each kind the check must catch, each on its own page."""
    good_site(root)
    defects = {
        "broken_link.html": page("<a href='missing.html'>nowhere</a>"),
        "missing_anchor.html": page("<a href='chapter.html#no-such-section'>nowhere</a>"),
        "broken_image.html": page("<img src='not-there.png'><img src='data:image/png;base64,AAAA'>"),
        "raw_math.html": page("<p>The loss is $$L = -\\log p$$ here.</p>"),
        "unrendered_math.html": page("<span class='math'>\\(x^2\\)</span>"),  # no MathJax loaded
        "math_error.html": page("<span class='math'>\\(\\frac{1}\\)</span>", MATHJAX_HEAD),
        "console_error.html": page("<script>console.error('something broke')</script><p>hi</p>"),
        "external_script.html": page("<p>cdn</p>", "<script src='https://cdn.example.com/lib.js'></script>"),
        "bad_redirect.html": "<meta http-equiv='Refresh' content='0; url=book/nothing.html' />",
        "external_fetch.html": page("<script>fetch('http://example.com/data.json').catch(() => null)"
                                    "</script><p>fetch</p>"),
    }
    for name, text in defects.items():
        (root / name).write_text(text)
    return root


def test_is_external_tells_local_from_remote_urls():
    assert check.is_external("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    assert check.is_external("//fonts.googleapis.com/css")
    assert not check.is_external("_static/mathjax/tex-mml-chtml.js")
    assert not check.is_external("http://127.0.0.1:8000/index.html")
    assert not check.is_external("data:image/png;base64,AAAA")


def test_static_problems_flag_external_assets_but_not_links(tmp_path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "theme.css").write_text(
        "@import url('https://fonts.googleapis.com/css2?family=Lato'); .a{background:url(img.png)}")
    (tmp_path / "index.html").write_text(page(
        "<a href='https://example.org'>fine</a><img src='https://example.org/x.png'>",
        "<script src='https://cdn.example.com/a.js'></script><link rel='stylesheet' href='//cdn.example.com/a.css'>"
        "<link rel='canonical' href='https://example.org/book/'><script src='_static/local.js'></script>"))
    problems = check.static_problems(tmp_path)
    assert sorted(problems) == ["_static/theme.css", "index.html"]
    assert len(problems["index.html"]) == 3  # script, stylesheet, img; not <a> nor rel=canonical
    assert "fonts.googleapis.com" in problems["_static/theme.css"][0]


def test_list_pages_skips_assets_and_sources(tmp_path):
    for name in ("index.html", "book/intro.html", "_static/x.html", "_sources/book/y.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(page(""))
    assert [p.relative_to(tmp_path).as_posix() for p in check.list_pages(tmp_path)] == [
        "book/intro.html", "index.html"]


@needs_browser
def test_good_site_passes(tmp_path):
    report = check.check_site(good_site(tmp_path / "site"), timeout=20)
    assert report.pages == ["book/index.html", "chapter.html", "index.html", "redirect.html"]
    assert report.ok, report.text()


@needs_browser
def test_every_kind_of_defect_is_reported(tmp_path, capsys):
    root = bad_site(tmp_path / "site")
    status = check.main([str(root), "--timeout", "20", "-q"])
    out = capsys.readouterr().out
    assert status == 1
    report = {line.split()[1]: [] for line in out.splitlines() if line.startswith("FAIL ")}
    current = None
    for line in out.splitlines():
        if line.startswith("FAIL "):
            current = line.split()[1]
        elif line.startswith("  - "):
            report[current].append(line[4:])
    # The good pages of the site still pass; every defect page fails for its own reason.
    expected = {
        "broken_link.html": "broken link",
        "missing_anchor.html": "missing anchor",
        "broken_image.html": "image not decoded",
        "raw_math.html": "raw TeX left",
        "unrendered_math.html": "math not rendered",
        "math_error.html": "MathJax error",
        "console_error.html": "console error",
        "external_script.html": "external asset in <script>",
        "external_fetch.html": "request to another host",
        "bad_redirect.html": "redirect target: broken link",
    }
    assert set(report) == set(expected), out
    for name, reason in expected.items():
        assert any(reason in problem for problem in report[name]), (name, report[name])
    assert "not-there.png" in " ".join(report["broken_image.html"])
    assert "14 pages checked in" in out and "4 passed" in out


BUILT_BOOK = Path(os.environ.get("BOOK_HTML") or ROOT / "_build" / "html")


@needs_browser
@pytest.mark.skipif(not (BUILT_BOOK / "index.html").is_file(),
                    reason=f"no built book in {BUILT_BOOK}: run `jupyter-book build .` first (or set BOOK_HTML)")
def test_built_book_passes_in_the_browser():
    report = check.check_site(BUILT_BOOK, timeout=60)
    assert any(name.startswith("book/") for name in report.pages)
    assert report.ok, report.text()


def test_network_log_flags_external_and_failed_page_requests_but_not_unattributed_failures():
    """A failure reported for a request the page never sent (Chromium's own speculative DNS work
    for an external link, offline) is not the site's fault; the page's own requests are checked."""
    import json as _json

    def entry(method, **params):
        return {"message": _json.dumps({"message": {"method": method, "params": params}})}

    log = [
        entry("Network.requestWillBeSent", requestId="1", request={"url": "http://127.0.0.1:8000/a.png"}),
        entry("Network.loadingFailed", requestId="1", errorText="net::ERR_FILE_NOT_FOUND"),
        entry("Network.requestWillBeSent", requestId="2", request={"url": "https://cdn.example.org/x.js"}),
        entry("Network.loadingFailed", requestId="3", errorText="net::ERR_NAME_NOT_RESOLVED"),
        entry("Network.loadingFailed", requestId="1", errorText="net::ERR_ABORTED", canceled=True),
    ]
    problems = check._network_problems(log)
    assert problems == ["request failed (net::ERR_FILE_NOT_FOUND): http://127.0.0.1:8000/a.png",
                        "request to another host: https://cdn.example.org/x.js"]
