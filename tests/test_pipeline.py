import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from ser_utils.__main__ import main
from ser_utils.cli.pipeline import NOTEBOOKS, NotebookFailed, run_notebook, run_pipeline
from ser_utils.core.config import REPO_ROOT, get_profile


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_start_with_parameters_and_carry_no_outputs(name):
    path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
    if not path.exists():
        pytest.fail(f"{path.name} is missing")
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert "profile = None" in first.source
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name} has outputs"


@pytest.fixture
def smoke_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("SER_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SER_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


@pytest.mark.slow
def test_pipeline_renders_reports_and_skips_unchanged_notebooks(smoke_dirs, capsys):
    steps = run_pipeline("smoke", only=["01"])
    html = smoke_dirs / "reports" / "01_download.html"
    assert [(s.name, s.status) for s in steps] == [("01_download", "ran")]
    page = html.read_text()
    assert "SMOKE PROFILE" in page and "status: complete" in page
    assert str(REPO_ROOT) not in page  # reports never show this machine's paths
    assert (smoke_dirs / "reports" / "results" / "corpus.csv").is_file()
    assert run_pipeline("smoke", only=["01"])[0].status == "skipped"
    assert run_pipeline("smoke", only=["01"], force=True)[0].status == "ran"


def test_a_failing_notebook_is_named_and_kept(smoke_dirs):
    broken = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('boom')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(broken, smoke_dirs / "99_broken.ipynb")
    with pytest.raises(NotebookFailed, match=r"99_broken failed in cell .*RuntimeError: boom") as err:
        run_notebook(get_profile("smoke"), "99_broken", notebook_dir=smoke_dirs)
    kept = smoke_dirs / "work" / "smoke" / "executed" / "99_broken.ipynb"
    assert kept.is_file() and str(kept) in str(err.value)


def test_the_package_runs_as_a_command():
    # The other CLI tests call main() in this process; this one checks the `python -m ser_utils` entry.
    done = subprocess.run([sys.executable, "-m", "ser_utils", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "finetune" in done.stdout and "predict" in done.stdout


def test_cli_validates_a_corpus(corpus_16k, capsys):
    assert main(["validate", str(corpus_16k)]) == 0
    out = capsys.readouterr().out
    assert "clips: 1440" in out and "status: complete" in out


def test_cli_writes_a_synthetic_corpus(tmp_path, capsys):
    assert main(["synth", str(tmp_path), "--actors", "2", "--seconds", "0.3"]) == 0
    assert len(list(tmp_path.rglob("*.wav"))) == 120
    assert json.loads((tmp_path / "synthetic.json").read_text())["actors"] == [1, 2]
    assert str(tmp_path) in capsys.readouterr().out


def test_cli_reports_a_partial_corpus_once_and_fails_it_when_strict(sample_48k, capsys):
    assert main(["validate", str(sample_48k)]) == 0
    out = capsys.readouterr().out
    assert out.count("PARTIAL") == 1 and "clips: 8" in out
    assert main(["validate", "--strict", str(sample_48k)]) == 1
    assert "missing: 1432" in capsys.readouterr().err


def test_cli_rejects_unknown_choices_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--protocol", "leave-one-out"])
    assert exit_.value.code == 2 and "random-80-20" in capsys.readouterr().err
    assert main(["finetune", "--recipe", "mine"]) == 2
    assert capsys.readouterr().err.strip() == "error: --recipe 'mine'; choose one of ('project', 'original')"


# ---- The pipeline's own promises (issue 32): stamps a rerun trusts, an interrupt that stops everything it
# started, a full disk that leaves nothing cut, advice printed as lines. Through `python -m ser_utils pipeline`.

def pipeline(*args, **options):
    return subprocess.run([sys.executable, "-m", "ser_utils", "pipeline", "--profile", "smoke", *args],
                          capture_output=True, text=True, timeout=600, **options)


def _state(root):
    """Every file under the reports, the stamps and the executed notebooks (not the kernels' logs, which say
    what the last run did), with its bytes."""
    folders = [root / "reports", root / "work" / "smoke" / "pipeline", root / "work" / "smoke" / "executed"]
    return {str(p.relative_to(root)): p.read_bytes() for folder in folders for p in folder.rglob("*")
            if p.is_file() and p.suffix != ".log"}


def _started_processes(pid: int) -> dict:
    """The processes pipeline ``pid`` runs now: its descendants and everything in its kernels' sessions
    (jupyter starts each kernel in a session of its own; joblib's workers stay in it)."""
    import psutil

    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    sessions = {p.pid for p in family if os.getsid(p.pid) == p.pid}
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) in sessions:
                family.append(process)
        except OSError:
            pass
    return {p.pid: p for p in family}


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _interrupt(signum, when, timeout=300.0):
    """Start ``pipeline --only 02 --force`` in a session of its own, send ``signum`` to its process group (a
    terminal's Ctrl-C) once ``when(processes)`` holds; returns the run and every process it was seen running."""
    run = subprocess.Popen([sys.executable, "-m", "ser_utils", "pipeline", "--profile", "smoke", "--only", "02",
                            "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    seen, sent, deadline = {}, False, time.monotonic() + timeout
    while run.poll() is None and time.monotonic() < deadline and not sent:
        seen.update(_started_processes(run.pid))
        if sent := when(seen):
            os.killpg(run.pid, signum)
        time.sleep(0.05)
    out, err = run.communicate(timeout=120)
    assert sent, f"the moment to interrupt never came (status {run.returncode}): {err}"
    return run, out, err, seen


def _loky_worker(processes) -> bool:
    import psutil

    def is_worker(process):
        try:
            return "loky" in " ".join(process.cmdline())
        except psutil.Error:
            return False
    return any(is_worker(p) for p in processes.values())


@pytest.mark.slow
def test_only_runs_stamp_what_a_rerun_trusts_and_an_interrupt_stops_every_process_and_keeps_reports(smoke_dirs):
    for only in ("01", "02"):  # a rerun after `--only 02` called 02 stale: "an earlier notebook changed"
        assert pipeline("--only", only).returncode == 0
    stamps = smoke_dirs / "work" / "smoke" / "pipeline"
    first, second = (json.loads((stamps / f"{n}.stamp").read_text()) for n in ("01_download", "02_eda"))
    assert second["parts"]["upstream"] == first["fingerprint"]
    dry = pipeline("--dry-run")
    assert dry.returncode == 0 and "[01_download] unchanged, would be skipped" in dry.stdout, dry.stdout
    assert "[02_eda] unchanged, would be skipped" in dry.stdout, dry.stdout

    before = _state(smoke_dirs)
    # SIGTERM once joblib's workers run (they kept running, parent PID 1, and the run said nothing), then a
    # Ctrl-C while the kernel starts: one line, 143 / 130, nothing it started left, reports and stamps as before.
    for signum, status, when in [(signal.SIGTERM, 143, _loky_worker), (signal.SIGINT, 130, bool)]:
        run, out, err, seen = _interrupt(signum, when)
        assert run.returncode == status and err == "error: interrupted\n", (run.returncode, err)
        assert "done" not in out
        left = [p for p in seen.values() if _alive(p)]
        assert not left, [" ".join(p.cmdline()) for p in left]
        assert _state(smoke_dirs) == before


def _small_files(limit):
    """In the child: files may not grow past ``limit`` bytes (writes beyond it fail with EFBIG, as a full disk's
    fail with ENOSPC: the same write path), and SIGXFSZ, which would kill the process instead, is ignored."""
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_files


@pytest.mark.slow
def test_a_full_disk_during_the_pipeline_is_one_line_and_leaves_no_cut_file(smoke_dirs):
    import soundfile as sf

    # A corpus clip is 32 kB: the first one cannot be written whole (was: a 75-line traceback, a cut WAV
    # and a cut executed notebook).
    done = pipeline("--only", "01", preexec_fn=_small_files(30_000))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert re.search(r"error: .*/[^/ ]+\.(wav|ipynb): not written \(File too large\)", lines[0]), lines
    files = [p for p in smoke_dirs.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith((".tmp", ".tmp.ipynb"))]
    for clip in (p for p in files if p.suffix == ".wav"):
        assert sf.info(str(clip)).frames == 16_000, clip
    for executed in (p for p in files if p.suffix == ".ipynb"):
        nbformat.read(executed, as_version=4)  # whole, or not there
    assert not (smoke_dirs / "work" / "smoke" / "pipeline" / "01_download.stamp").exists()


@pytest.mark.slow
def test_without_ravdess_dir_and_kaggle_the_advice_is_printed_as_lines(smoke_dirs, monkeypatch):
    monkeypatch.delenv("RAVDESS_DIR", raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(smoke_dirs / "kagglehub"))  # no earlier download to find
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):  # no network, and never reach it
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "ser_utils", "pipeline", "--profile", "full", "--only", "01"],
                          capture_output=True, text=True, timeout=600)
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and "\\n" not in done.stderr and "KeyboardInterrupt" not in done.stderr, lines
    assert re.fullmatch(r"error: notebook 01_download failed in cell \d+ \(the executed notebook is kept at .+\): "
                        r"DownloadError: could not download RAVDESS \(.+\) with kagglehub: no connection to Kaggle "
                        r"\(Connection refused\)", lines[0]), lines
    assert lines[1:] == ["If you have a local copy, point the study at it with RAVDESS_DIR, e.g.",
                         "    RAVDESS_DIR=/path/to/ravdess make all",
                         "(any folder holding the RAVDESS .wav or .flac files, at any depth)."]
