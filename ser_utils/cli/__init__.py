"""The commands: what each ``python -m ser_utils`` command does (``commands``; argument parsing stays in
``ser_utils.__main__``) and the papermill runner of ``make all`` (``pipeline``).

May import every layer.
"""
