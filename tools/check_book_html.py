#!/usr/bin/env python3
"""Load every page of the built book in headless Chromium and check that it works offline.

    python tools/check_book_html.py [HTML_DIR]      # default: _build/html

The folder is served on 127.0.0.1 (a free port, ``http.server`` in a thread) and every ``*.html``
page outside ``_static/``, ``_sources/`` and ``_images/`` is loaded in Debian's headless Chromium
through chromedriver + selenium, with background networking off, a fresh profile, and every host
name except 127.0.0.1 resolving to nothing. A page passes when

- the browser console has no error (``SEVERE``) entries;
- every ``<img>`` is decoded (``naturalWidth > 0`` after the page was scrolled through);
- its math is rendered: every Sphinx math element (``span.math``, ``div.math``) holds an
  ``mjx-container``, no MathJax error node (``mjx-merror``) is shown, and no raw TeX delimiters
  (``$$``, ``\\(``, ``\\[``, ``\\begin{``) are left in the visible text outside code;
- every link inside the site maps to an existing file, and its ``#anchor`` exists on the target page
  (a redirect page, like Jupyter Book's ``index.html``, is checked on the page it redirects to);
- every request goes to 127.0.0.1 (Chromium's network log, the page's resource timings, and the
  static HTML/CSS are all checked) and none fails (HTTP status >= 400 or a network error).

Exit status: 0 every page passed, 1 problems were found (a report lists them per page),
2 the check could not run (no such folder, no Chromium, chromedriver or selenium).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"
LOCAL_HOST = "127.0.0.1"
# Folders of a Sphinx build that hold assets or sources rather than pages.
NON_PAGE_DIRS = {"_static", "_sources", "_images", "_downloads", ".doctrees", "_panels_static"}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--dns-prefetch-disable",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1280,1000",
    # Any other host fails to resolve, so the check means the same on a machine with internet;
    # the attempt itself is still seen in the network log and reported.
    f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {LOCAL_HOST}",
)
# <link rel=...> values whose href the browser fetches.
FETCHED_LINK_RELS = {"stylesheet", "icon", "shortcut", "preload", "prefetch", "modulepreload",
                     "preconnect", "dns-prefetch", "manifest", "apple-touch-icon", "mask-icon"}
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)


@dataclass
class Report:
    """Problems found, per page (path relative to the HTML folder); ``pages`` lists every page loaded."""

    pages: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, page: str, problem: str) -> None:
        self.problems.setdefault(page, []).append(problem)

    @property
    def ok(self) -> bool:
        return bool(self.pages) and not self.problems

    def text(self) -> str:
        lines = []
        for page in sorted(self.problems):
            lines.append(f"FAIL {page}")
            lines.extend(f"  - {problem}" for problem in self.problems[page])
        passed = sum(page not in self.problems for page in self.pages)
        lines.append(f"{len(self.pages)} pages checked in {self.seconds:.1f} s: {passed} passed; "
                     f"{len(self.problems)} files with problems")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Static HTML: page list, element ids, external assets
# ---------------------------------------------------------------------------------------------


def list_pages(root: Path) -> list[Path]:
    """Every HTML page of the site, sorted; assets and copied sources are not pages."""
    root = Path(root)
    return sorted(p for p in root.rglob("*.html")
                  if not NON_PAGE_DIRS.intersection(p.relative_to(root).parts[:-1]))


class _PageParser(html.parser.HTMLParser):
    """Collects element ids (link targets) and every URL the browser would fetch."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.fetched: list[tuple[str, str]] = []  # (tag, url)
        self.refresh_to: str | None = None  # target of a <meta http-equiv="refresh"> redirect
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag in ("script", "img", "iframe", "source", "video", "audio", "embed", "track", "input"):
            if attrs.get("src"):
                self.fetched.append((tag, attrs["src"]))
        if tag in ("img", "source") and attrs.get("srcset"):
            self.fetched.extend((tag, part.split()[0]) for part in attrs["srcset"].split(",") if part.strip())
        if tag == "object" and attrs.get("data"):
            self.fetched.append((tag, attrs["data"]))
        if tag == "link" and FETCHED_LINK_RELS.intersection(attrs.get("rel", "").lower().split()):
            self.fetched.append((tag, attrs.get("href", "")))
        if tag == "meta" and attrs.get("http-equiv", "").lower() == "refresh":
            match = re.search(r"url\s*=\s*['\"]?([^'\";]+)", attrs.get("content", ""), re.I)
            self.refresh_to = match.group(1).strip() if match else None
        if attrs.get("style"):
            self.fetched.extend(("style", url) for url in CSS_URL.findall(attrs["style"]))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.fetched.extend(("style", url) for url in CSS_URL.findall(data))


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def is_external(url: str) -> bool:
    """True when fetching ``url`` would leave 127.0.0.1 (relative URLs, data: and blob: stay local)."""
    parts = urlsplit(url.strip())
    if parts.scheme and parts.scheme not in ("http", "https", "ws", "wss", "ftp"):
        return False
    return bool(parts.netloc) and parts.hostname not in (LOCAL_HOST, "localhost")


def static_problems(root: Path) -> dict[str, list[str]]:
    """External assets referenced by the pages' HTML (script, link, img, ... and inline CSS) and by
    the site's CSS files, per file relative to ``root``. Links (``<a href>``) are not assets."""
    root = Path(root)
    problems: dict[str, list[str]] = {}
    for page in list_pages(root):
        for tag, url in _parse(page).fetched:
            if is_external(url):
                problems.setdefault(page.relative_to(root).as_posix(), []).append(
                    f"external asset in <{tag}>: {url}")
    for css in sorted(root.rglob("*.css")):
        for url in CSS_URL.findall(css.read_text(encoding="utf-8", errors="replace")):
            if is_external(url):
                problems.setdefault(css.relative_to(root).as_posix(), []).append(
                    f"external asset in CSS: {url}")
    return problems


def link_problem(href: str, base: str, root: Path, page_ids: set[str]) -> str | None:
    """Why the site-internal link ``href`` (absolute URL) is broken, or None. Links that leave the
    site are not followed (the reader may be offline); ``page_ids`` are the ids of the live page."""
    parts = urlsplit(href)
    if parts.scheme not in ("http", "https") or parts.netloc != urlsplit(base).netloc:
        return None
    relative = unquote(parts.path).lstrip("/")
    target = root / relative
    if relative == "" or relative.endswith("/") or target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"broken link: {href} (no file {target.relative_to(root).as_posix()})"
    fragment = unquote(parts.fragment)
    if fragment and target.suffix == ".html":
        same_page = href.split("#")[0] == base.split("#")[0]
        if fragment not in _parse(target).ids and not (same_page and fragment in page_ids):
            return f"missing anchor: {href} (no id {fragment!r} in {target.relative_to(root).as_posix()})"
    return None


# ---------------------------------------------------------------------------------------------
# Serving and the browser
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root`` on 127.0.0.1 at a free port; yield (base URL, list of (path, status)).

    The list records every request the server answered, so failures are seen even when the
    browser's own logs miss them."""
    served: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_request(self, code="-", size="-"):
            served.append((self.path, int(code) if str(code).isdigit() else 0))

        def log_message(self, *args):  # keep the report readable
            pass

    server = http.server.ThreadingHTTPServer((LOCAL_HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL_HOST}:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()


def make_driver(chromium: str, chromedriver: str, profile_dir: str, timeout: float):
    """Headless Chromium through chromedriver, logging the console and the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)
    return driver


# Runs in the page once it has loaded: scroll every image into view (so lazy ones load), wait for
# their decoding, for MathJax's first typeset and for web fonts, then report what the checks need.
_INSPECT_PAGE = r"""
const done = arguments[arguments.length - 1];
(async () => {
  // A large page may still be parsing when the driver hands over (e.g. on a busy machine).
  while (document.readyState !== "complete" || !document.body) {
    await new Promise(resolve => setTimeout(resolve, 50));
  }
  const images = Array.from(document.images);
  for (const img of images) { img.loading = "eager"; img.scrollIntoView(); }
  window.scrollTo(0, document.body.scrollHeight);
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  let mathjax = "absent";
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    await window.MathJax.startup.promise;
    mathjax = "typeset";
  } else if (window.MathJax) {
    mathjax = "configured but not loaded";
  }
  if (document.fonts) await document.fonts.ready;
  const mathElements = Array.from(document.querySelectorAll("span.math, div.math"));
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "KBD", "SAMP", "MJX-CONTAINER"]);
  const rawTex = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let e = node.parentElement; e; e = e.parentElement) {
        if (skip.has(e.tagName) || e.classList.contains("highlight")) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const m = node.data.match(/\$\$|\\\(|\\\[|\\begin\{/);
    if (m) rawTex.push(node.data.slice(Math.max(0, m.index - 30), m.index + 50).trim());
  }
  done({
    url: location.href,
    images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth})),
    mathjax: mathjax,
    mathElements: mathElements.length,
    unrendered: mathElements.filter(e => !e.querySelector("mjx-container"))
                            .map(e => e.textContent.trim().slice(0, 80)),
    mathErrors: Array.from(document.querySelectorAll("mjx-merror"))
                     .map(e => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 80)),
    rawTex: rawTex,
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    ids: Array.from(document.querySelectorAll("[id]")).map(e => e.id),
    resources: performance.getEntriesByType("resource").map(e => e.name),
  });
})().catch(err => done({error: String(err && err.stack || err)}));
"""


def _network_problems(entries: list[dict]) -> list[str]:
    """Requests to other hosts and failed requests, from Chromium's performance (DevTools) log."""
    problems, urls = [], {}
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if is_external(url):
                problems.append(f"request to another host: {url}")
        elif method == "Network.responseReceived":
            status = int(params["response"].get("status", 0))
            if status >= 400:
                problems.append(f"HTTP {status}: {params['response']['url']}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            if params.get("requestId") not in urls:
                # Not a request of this page (no requestWillBeSent in its log): Chromium's own
                # speculative DNS/preconnect work for an external link can fail like this offline.
                continue
            url = urls[params["requestId"]]
            if not is_external(url):  # external requests are reported above already
                problems.append(f"request failed ({params.get('errorText')}): {url}")
    return problems


def _is_browser_favicon(url: str) -> bool:
    """Chromium asks for /favicon.ico by itself when a page names no icon (e.g. Jupyter Book's
    redirecting index.html, or a server error page): not a request the site makes."""
    return urlsplit(url).path == "/favicon.ico"


def _inspect(driver, url: str, root: Path, redirect_to: str | None, timeout: float) -> list[str]:
    """Load the page and run the in-page checks (everything except the browser's logs)."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        driver.get(url)
        if redirect_to is not None:
            target = urljoin(url, redirect_to)
            problem = link_problem(target, url, root, set())
            if problem:
                return [f"redirect target: {problem}"]
            WebDriverWait(driver, timeout).until(
                lambda d: d.current_url.split("#")[0] == target.split("#")[0]
                and d.execute_script("return document.readyState") == "complete")
        info = driver.execute_async_script(_INSPECT_PAGE)
    except Exception as exc:  # a timeout or a crashed renderer is a failure of this page
        return [f"could not load/inspect the page: {type(exc).__name__}: {str(exc).splitlines()[0]}"]
    if "error" in info:
        return [f"page inspection script failed: {info['error']}"]
    problems = [f"request to another host (resource timing): {r}" for r in info["resources"]
                if is_external(r)]
    problems += [f"image not decoded (naturalWidth 0): {img['src']}" for img in info["images"]
                 if img["width"] <= 0]
    if info["mathElements"] and info["mathjax"] != "typeset":
        problems.append(f"{info['mathElements']} math elements but MathJax is {info['mathjax']}")
    problems += [f"math not rendered: {text!r}" for text in info["unrendered"]]
    problems += [f"MathJax error: {text!r}" for text in info["mathErrors"]]
    problems += [f"raw TeX left in the text: {text!r}" for text in info["rawTex"]]
    page_ids = set(info["ids"])
    for href in sorted(set(info["links"])):
        problem = link_problem(href, info["url"], root, page_ids)
        if problem:
            problems.append(problem)
    return problems


def check_page(driver, url: str, root: Path, redirect_to: str | None = None, timeout: float = 30.0) -> list[str]:
    """Load one page and return its problems (empty when it passes). A page that redirects
    (``redirect_to``, from its ``<meta http-equiv="refresh">``) is checked once the target loaded."""
    problems = _inspect(driver, url, root, redirect_to, timeout)
    # Leave the page before reading the logs, so whatever it still did (late requests, errors
    # of a redirect target) is reported here and not with the next page.
    with contextlib.suppress(Exception):
        driver.get("about:blank")
    for entry in driver.get_log("browser"):
        message = entry.get("message", "")
        if entry.get("level") == "SEVERE" and not _is_browser_favicon(message.split(" ")[0]):
            problems.append(f"console error: {message}")
    problems += [p for p in _network_problems(driver.get_log("performance"))
                 if not _is_browser_favicon(p.split(" ")[-1])]
    # A repeated problem (e.g. the same broken link in the sidebar twice) is reported once.
    return list(dict.fromkeys(problems))


def check_site(root: Path, *, chromium: str = DEFAULT_CHROMIUM, chromedriver: str = DEFAULT_CHROMEDRIVER,
               timeout: float = 30.0, pages: list[Path] | None = None, progress=None) -> Report:
    """Serve ``root``, load every page (or ``pages``) in headless Chromium, return the report."""
    root = Path(root).resolve()
    _parse.cache_clear()  # pages may have been rebuilt since a previous call
    started = time.perf_counter()
    report = Report()
    for name, problems in static_problems(root).items():
        for problem in problems:
            report.add(name, problem)
    pages = list_pages(root) if pages is None else [Path(p).resolve() for p in pages]
    with serve(root) as (base, served), tempfile.TemporaryDirectory(prefix="book-check-") as profile:
        driver = make_driver(chromium, chromedriver, profile, timeout)
        try:
            for page in pages:
                name = page.relative_to(root).as_posix()
                report.pages.append(name)
                if progress:
                    progress(name)
                already_served = len(served)
                for problem in check_page(driver, urljoin(base, name), root,
                                          redirect_to=_parse(page).refresh_to, timeout=timeout):
                    report.add(name, problem)
                reported = " ".join(report.problems.get(name, []))
                for path, status in served[already_served:]:
                    if status >= 400 and path not in reported and not _is_browser_favicon(path):
                        report.add(name, f"server answered {status} for {path}")
        finally:
            driver.quit()
    report.seconds = time.perf_counter() - started
    return report


def missing_tools(chromium: str = DEFAULT_CHROMIUM, chromedriver: str = DEFAULT_CHROMEDRIVER) -> list[str]:
    """What is missing to run the browser check (empty when everything is there)."""
    missing = [f"{what} ({path})" for what, path in (("chromium", chromium), ("chromedriver", chromedriver))
               if not (shutil.which(path) or Path(path).is_file())]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html_dir", nargs="?", default="_build/html", help="built HTML (default: _build/html)")
    parser.add_argument("--chromium", default=DEFAULT_CHROMIUM)
    parser.add_argument("--chromedriver", default=DEFAULT_CHROMEDRIVER)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per page load and per page check")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not list pages as they are loaded")
    args = parser.parse_args(argv)

    root = Path(args.html_dir)
    if not (root / "index.html").is_file():
        print(f"error: {root} has no index.html; build the book first (jupyter-book build .)", file=sys.stderr)
        return 2
    missing = missing_tools(args.chromium, args.chromedriver)
    if missing:
        print("error: cannot run the browser check, missing: " + ", ".join(missing)
              + " (Debian: apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager go online
    progress = None if args.quiet else (lambda name: print(f"loading {name}", file=sys.stderr, flush=True))
    report = check_site(root, chromium=args.chromium, chromedriver=args.chromedriver,
                        timeout=args.timeout, progress=progress)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps({"pages": report.pages, "problems": report.problems,
                                               "seconds": round(report.seconds, 2)}, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
