"""Root pytest configuration: what spans ``tests/`` and ``notebooks/``.

``make test`` runs on one pytest-xdist worker per core. A notebook's cells share one kernel and the
notebooks build on each other (04 exports the models 06 scores), so every notebook cell is one unit of
work, run by one worker in collection order (01 ... 06) while the others take the unit tests one by one.
"""

import pytest


@pytest.hookimpl(optionalhook=True)  # called only when pytest-xdist runs the session
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):
        """Every notebook cell in one scope; every other test a scope of its own. (xdist's
        ``xdist_group`` mark cannot do it: nbval's cells do not take the mark's suffix on their ids.)"""

        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if nodeid.split("::", 1)[0].endswith(".ipynb") else nodeid

    return NotebooksTogether(config, log)
