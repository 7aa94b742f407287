"""The README's "Read this first" is true: a learner's path through the method, in the paper's
order, short enough for one sitting, and every paper tag it promises is in the code it names.

The README lists the path as a table (`file.py`: `name`, ... with a line count per row) and the
tags as a table (tag, `file.py`: `name`). The objects are found by name in each file's syntax tree:
a renamed function fails here, as a wrong line count does, instead of leaving the README stale.
"""

import ast
import functools
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_PATH_LINES = 700
SECTION = "## Read this first"


def readme_section():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end != -1 else len(text)]


def table_rows(section, first_header):
    """The rows of the Markdown table whose header starts with `first_header`: lists of cells."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def named_objects(cell):
    """`file.py`: `a`, `B.c`; `other.py`: `d` -> [("file.py", "a"), ("file.py", "B.c"), ...]."""
    found, file = [], None
    for token in re.findall(r"`([^`]+)`", cell):
        if token.endswith(".py"):
            file = token
        else:
            assert file, f"{cell!r}: name a file before its functions"
            found.append((file, token.removesuffix("()")))
    return found


@functools.lru_cache(maxsize=None)  # each file parsed once, however many names it has
def definitions(file):
    """{qualified name: ast node} of the top-level functions, classes, their methods and the
    top-level constants."""
    tree = ast.parse(open(os.path.join(REPO, file), encoding="utf-8").read())
    nodes = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            nodes.update({target.id: node for target in node.targets
                          if isinstance(target, ast.Name)})
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            nodes[node.name] = node
            for child in getattr(node, "body", []):
                if isinstance(child, ast.FunctionDef):
                    nodes[f"{node.name}.{child.name}"] = child
    return nodes


def span(file, name):
    node = definitions(file).get(name)
    assert node is not None, f"README names {file}: {name}, which the file does not define"
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno


def test_the_path_is_in_paper_order_short_and_its_line_counts_are_true():
    rows = table_rows(readme_section(), "step")
    total = 0
    for step, _, where, lines in rows:
        spans = [span(file, name) for file, name in named_objects(where)]
        counted = sum(end - first + 1 for first, end in spans)
        assert int(lines) == counted, (f"step {step}: the README says {lines} lines, "
                                       f"the code {counted}")
        total += counted
    assert total <= MAX_PATH_LINES, f"the path is {total} lines (target <= {MAX_PATH_LINES})"
    assert f"{total} lines" in readme_section(), f"the README should give the total, {total} lines"


def citations(text):
    """The paper references in `text`'s brackets: "[Sec. 3.1, Eq. 4]", "[Eq. 2-4]" or "[Sec. 3.2,
    4.1]" -> {"Sec. 3.1", "Eq. 4"}, {"Eq. 2", "Eq. 3", "Eq. 4"}, {"Sec. 3.2", "Sec. 4.1"}."""
    found = set()
    for group in re.findall(r"\[([^\]]*)\]", text):
        kind = None
        for part in group.split(","):
            match = re.fullmatch(r"\s*(?:(Eq\.|Sec\.)\s*)?(\d+(?:\.\d+)?)(?:-(\d+))?\s*", part)
            if not match or not (match[1] or kind):
                kind = None if not match else kind
                continue
            kind = match[1] or kind
            if match[3]:
                found |= {f"{kind} {n}" for n in range(int(match[2]), int(match[3]) + 1)}
            else:
                found.add(f"{kind} {match[2]}")
    return found


def test_citations_are_read_as_a_reader_reads_them():
    assert citations("x [Sec. 3.1, Eq. 4] y [Eq. 2-4] [Sec. 3.2, 4.1] [Fig. 2b] [0, 1]") == {
        "Sec. 3.1", "Eq. 4", "Eq. 2", "Eq. 3", "Sec. 3.2", "Sec. 4.1"}


def test_every_paper_tag_the_readme_lists_is_where_it_says():
    rows = table_rows(readme_section(), "tag")
    tags = {tag.strip("`") for tag, _ in rows}
    for needed in ["[Eq. 1]", "[Eq. 2]", "[Eq. 3]", "[Eq. 4]", "[Sec. 3.2]", "[Sec. 3.3]",
                   "[Sec. 4.1]", "[Sec. 4.4]"]:
        assert needed in tags, f"the README's tag table lacks {needed}"
    for tag, where in rows:
        tag = tag.strip("`")
        for file, name in named_objects(where):
            first, end = span(file, name)
            lines = open(os.path.join(REPO, file), encoding="utf-8").read().splitlines()
            code = "\n".join(lines[first - 1:end])
            assert tag.strip("[]") in citations(code), f"{tag} is not in {file}: {name}"
