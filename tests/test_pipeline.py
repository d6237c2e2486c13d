import json
import subprocess
import sys

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
