"""Fixes to the book's HTML that the configuration alone cannot make (loaded from _config.yml,
``sphinx.local_extensions``).

Sphinx 7.4 emits every inline script that an extension registers after the HTML builder has
started twice: once as added, and once more when ``StandaloneHTMLBuilder.prepare_writing`` copies
the registry again, under the file name ``''`` instead of ``None``, which defeats its duplicate
check. sphinx-thebe's ``const THEBE_JS_URL = ...`` declared twice is a SyntaxError in the console of
every page (sphinx-togglebutton's selector is repeated too, harmlessly). Each page keeps one copy.
"""
from __future__ import annotations


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    """Remove repeated entries of the page's script list, keeping the first of each."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (script.filename or "", script.priority, repr(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # the builder's own list: it restores it from a backup after each page


def setup(app):
    # Late, so scripts that other extensions add for one page (myst-nb) are seen too.
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
