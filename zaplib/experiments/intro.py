"""The book's introduction (``book/intro.ipynb``): the scoreboard of every chapter's claims.

It computes nothing: it reads the claims tables the chapters publish with
:func:`zaplib.report.publish` (``<store>/claims/<chapter>.csv``), so it is executed after them
(:func:`zaplib.runner.build_book` runs chapters that read ``claims`` last).
"""
from __future__ import annotations

from ..chapters import Chapter
from ..report import CLAIMS_FOLDER

CHAPTER = Chapter(
    experiments=(CLAIMS_FOLDER,),
    name="intro",
    title="The Reset Book",
    notebook="book/intro.ipynb",
    description="The introduction and its scoreboard: every chapter's claims and verdicts on one table.",
    params={},
    profiles={"smoke": {}, "quick": {}, "paper": {}},
)
