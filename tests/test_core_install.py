"""The core install (``pip install .``, no extras) trains, evaluates and attacks.

The extras' packages (faiss, gradio, umap, matplotlib, httpx, pymilvus) are made
unimportable in a fresh interpreter, which is what a core install looks like to the code;
``eat train``, ``eat eval`` and ``eat attack`` must still run there, and ``import
eat_models.train`` must load none of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("faiss", "gradio", "umap", "matplotlib", "httpx", "pymilvus", "milvus_lite")

BLOCK = textwrap.dedent(
    f"""
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRAS!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, NotInstalled())
    """
)


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_library_imports_no_extra():
    done = _run(
        """
        import eat_models.train, eat_models.attacks, eat_models.evaluate, index.cli, eat_command
        print([m for m in sys.modules if m.split(".")[0] in {extras!r}])
        """.replace("{extras!r}", repr(EXTRAS)),
        REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_train_eval_and_attack_run_without_the_extras(tmp_path):
    done = _run(
        """
        from eat_command import main
        run = ["--out", "run"]
        assert main(["train", "--max-train", "300", "--epochs", "1", "--width", "8",
                     "--quiet", *run]) == 0
        assert main(["eval", "run", "--max-test", "200", "--quiet"]) == 0
        assert main(["attack", "run", "--attack", "es", "--steps", "2", "--max-test", "100",
                     "--quiet"]) == 0
        assert main(["index", "info", "nowhere"]) != 0  # the index commands need the extra
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]["recall@1"] > 0.2
    assert "faiss" in done.stderr or "index" in done.stderr
