"""The README's tour must run as written (the docs' quick start agrees with it)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_tour():
    assert _python_blocks(), "README.md lost its python tour"


def test_readme_python_blocks_run_in_order():
    """The blocks build on each other, as a reader runs them: one namespace, in order."""
    namespace = {"__name__": "readme"}
    for index, code in enumerate(_python_blocks()):
        exec(compile(code, f"README.md[python block {index}]", "exec"), namespace)
    assert namespace["cert"].k == 157 and namespace["cert"].overlap.shape == (8,)


def test_readme_starts_with_install_and_test_commands():
    text = README.read_text()
    first_block = re.search(r"```(?:bash)?\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert "captum-robust demo" in first_block[0] and "pip install" in first_block[0]
    assert "pytest" in first_block[1]
