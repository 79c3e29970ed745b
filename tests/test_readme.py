"""The README's fuzzing snippet runs as written."""

import re
from pathlib import Path


def test_readme_fuzz_snippet_runs():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    match = re.search(r"<!-- fuzz-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README lost its fuzz snippet"
    namespace: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    namespace["test_my_layer"]()  # hypothesis runs the property over the CI profile's examples
