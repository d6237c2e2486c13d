"""Every result file and what is read from them: the store, tables, comparisons, report, figures.

``store``    the one reader / writer of each result file, keyed by the results-folder layout
``tables``   tables across systems: comparison, bootstrap intervals, best system, errors, significance, README
``compare``  do two results folders agree within their bootstrap intervals (``compare-results``)
``report``   provenance and headers of the HTML reports;  ``plots``  the figures

May import every layer up to ``serving`` (in practice ``evaluation`` and below).
"""
