"""The ground floor: settings, paths and what every layer shares; imports nothing of ``ser_utils``.

``names``        system names and what they say (prefixes, kinds, notes, model folders, normalization names)
``config``       profiles (full / smoke) and their run sizes, protocol names, paths, environment overrides,
                 the setting error;  ``layout``  the results-folder layout (every path in it)
``atomic``       every output file written whole or not at all (temp file, fsync, rename)
``cache``        content-keyed on-disk cache with a parallel, resumable map
``fingerprint``  digests of code and parameters (what caches and the pipeline key on)
``console``      the CLI's stdout and stderr lines;  ``progress``  progress bars, off in headless runs
``interrupts``   Ctrl-C / SIGTERM stop a run between files;  ``device``  precision, autocast and batch size
"""
