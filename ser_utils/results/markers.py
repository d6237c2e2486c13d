"""Pieces of report HTML that the notebooks' headers (:mod:`.report`), the report renderer (:mod:`.render`) and the
site's own pages (:mod:`.site`) share. They live here, below all three, so that none of them imports another
for a constant."""

from __future__ import annotations

import html

SMOKE_BANNER = ("**SMOKE PROFILE: the numbers in this report mean nothing.** They come from a generated "
                "corpus and a tiny randomly initialised model, and only show that the pipeline runs.")

#: Where a report's header (``report.show_header``) asks for its key numbers; :mod:`.render` fills it.
KEY_NUMBERS_SLOT = "<div class='key-numbers-slot'></div>"


def smoke_banner_html() -> str:
    """:data:`SMOKE_BANNER` as the banner a page shows."""
    return f"<div class='banner'>{html.escape(SMOKE_BANNER.replace('**', ''))}</div>"
