"""Every code example in the README and in the files beside it (docs/*.md) runs, and every training
example trains.

Each file has its own scratch folder: its shell blocks run there line by line, in order, through bash
with this environment's console script, then its Python blocks (each in a fresh namespace), so a Python
example may read what the file's shell lines wrote. Each line must exit 0, each ``manualnn train`` line
must train, and every TrainResult a Python block leaves behind must show its loss falling at least 10x
(2x on a real data set, whose noise stays in the loss; a digits run keeps weights of >= 98% validation
accuracy, as the README states), and a ``text`` block right after a shell block is what that block's last
command prints on stdout (numbers within 1e-3, relative: another CPU may round a trained weight differently). The two contract commands (between the run-command and
test-command markers) are CI's own job and are skipped here, as is a block right after a
``<!-- no-test: why -->`` line.
"""
import json
import math
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                              if f.endswith(".md"))
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
REAL_DATA = re.compile(r"\bload_\w+\(")   # load_data("digits"), scikit-learn's load_wine() ...


def blocks(doc="README.md"):
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    found = []
    for m in BLOCK.finditer(text):
        before = text[:m.start()].rstrip().splitlines()[-1:] or [""]
        if re.match(r"<!-- (run-command|test-command|no-test\b)", before[0]):
            continue
        found.append((m.group(1), m.group(2), text[:m.start()].count("\n") + 1))
    return found


def shell_lines(docs=DOCS):
    lines = []
    for doc in docs:
        for lang, body, line in blocks(doc):
            if lang not in ("bash", "sh", ""):
                continue
            for i, cmd in enumerate(body.splitlines()):
                cmd = cmd.strip()
                if cmd and not cmd.startswith("#"):
                    lines.append((doc, cmd, line + 1 + i))
    return lines


def shown_outputs(docs=DOCS):
    """{(doc, line of a shell block's last command): the ``text`` block right after that shell block}."""
    shown = {}
    for doc in docs:
        text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
        found = list(BLOCK.finditer(text))
        for block, after in zip(found, found[1:]):
            if block.group(1) in ("bash", "sh", "") and after.group(1) == "text" and \
                    not text[block.end():after.start()].strip():
                lines = block.group(2).splitlines()
                last = max((i for i, cmd in enumerate(lines) if cmd.strip() and not cmd.strip().startswith("#")),
                           default=None)
                if last is not None:
                    shown[(doc, text[:block.start()].count("\n") + 2 + last)] = after.group(2)
    return shown


SHOWN = shown_outputs()


def assert_shows(out, shown, where):
    """``out`` is the README's ``shown`` output: the same lines and cells, numbers within 1e-3 of each other
    (relative; 1e-6 absolute near zero): far above what another backend, thread count or CPU changes (about
    2e-7 between the native runner and torch, 1 and 2 threads), far below a change of defaults."""
    got, expected = out.splitlines(), shown.splitlines()
    assert len(got) == len(expected), f"{where}: printed {len(got)} lines, the README shows {len(expected)}\n{out}"
    for mine, theirs in zip(got, expected):
        cells, shown_cells = mine.split(","), theirs.split(",")
        same = len(cells) == len(shown_cells) and all(
            a == b or (_number(a) is not None and _number(b) is not None and
                       math.isclose(_number(a), _number(b), rel_tol=1e-3, abs_tol=1e-6))
            for a, b in zip(cells, shown_cells))
        assert same, f"{where}: printed\n{mine}\nwhere the README shows\n{theirs}"


def _number(cell):
    try:
        return float(cell)
    except ValueError:
        return None


def test_the_shown_outputs_are_found():
    assert any("predict --model flowers.pt" in cmd for doc, cmd, line in shell_lines() if (doc, line) in SHOWN)


def python_blocks(docs=DOCS):
    return [(doc, body, line) for doc in docs for lang, body, line in blocks(doc) if lang == "python"]


def test_the_readme_has_examples_of_each_kind():
    commands = [c for _, c, _ in shell_lines(["README.md"])]
    assert len(python_blocks(["README.md"])) >= 3
    assert any(c.startswith("manualnn train --data digits") for c in commands)
    assert any(c.startswith("manualnn predict") for c in commands)


def test_every_file_beside_the_readme_is_linked_from_it():
    text = open(README, encoding="utf-8").read()
    assert len(DOCS) > 1 and all(f"]({doc})" in text for doc in DOCS[1:]), DOCS


def trained(losses, val_accuracies, cmd, best_epoch=None, real_data=False):
    falls = 2 if real_data or "--data" in cmd else 10
    assert losses[-1] <= losses[0] / falls, f"{cmd}: the loss fell only from {losses[0]} to {losses[-1]}"
    if "--data digits" in cmd:
        kept = val_accuracies[best_epoch if best_epoch is not None else -1]
        assert kept >= 0.98, f"{cmd}: validation accuracy {kept} at the kept epoch"


@pytest.fixture(scope="module")
def scratches(tmp_path_factory):
    return {doc: tmp_path_factory.mktemp(os.path.basename(doc)[:-3]) for doc in DOCS}


def env(native_cache=None):
    e = dict(os.environ)
    e.pop("TRITON_INTERPRET", None)
    e["PATH"] = os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", "")
    if native_cache:   # the session's one build of the native runner: no compile per example
        e["MANUALNN_NATIVE_CACHE"] = native_cache
    return e


def native_cache_for(text, request):
    return request.getfixturevalue("native_build")[0] if "native" in text else None


def in_process(argv, cmd):
    """A plain ``manualnn ...`` line (no pipe, redirection or variable) runs through manualnn.cli.main in
    this process: the same code as the console script (tests/test_cli.py runs that itself), without
    starting Python and importing torch again for every line."""
    return argv[0] == "manualnn" and argv[1:2] != ["build-native"] and not any(c in cmd for c in "|;&><$`")


@pytest.mark.parametrize("doc,cmd,line", shell_lines(), ids=[f"{d}:{n}" for d, _, n in shell_lines()])
def test_shell_example(doc, cmd, line, scratches, request, monkeypatch, capsys):
    scratch = scratches[doc]
    cmd = cmd.split("  #")[0].strip()       # the README's trailing comments
    argv = shlex.split(cmd)
    check = None
    if argv[:2] == ["manualnn", "train"] or argv[:4] == ["python", "-m", "manualnn", "train"]:
        if "--help" not in argv:
            if "--json" in argv:
                check = argv[argv.index("--json") + 1]
            else:
                check = f"_readme_line{line}.json"
                cmd += f" --json {check}"
                argv += ["--json", check]
    if in_process(argv, cmd):
        from manualnn.cli import main
        monkeypatch.chdir(scratch)
        if native_cache_for(cmd, request):
            monkeypatch.setenv("MANUALNN_NATIVE_CACHE", native_cache_for(cmd, request))
        try:
            code = main(argv[1:])
        except SystemExit as e:   # --help
            code = e.code
        out, err = capsys.readouterr()
        assert code == 0, f"{doc} line {line}: {cmd}\n{err[-2000:]}"
    else:
        if argv[0] == "python":
            cmd = shlex.quote(sys.executable) + cmd[len("python"):]
        proc = subprocess.run(["bash", "-c", cmd], cwd=scratch, env=env(native_cache_for(cmd, request)),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{doc} line {line}: {cmd}\n{proc.stderr[-2000:]}"
        out, err = proc.stdout, proc.stderr
    assert "Traceback" not in err
    if (doc, line) in SHOWN:
        assert_shows(out, SHOWN[(doc, line)], f"{doc} line {line}: {cmd}")
    if check:
        record = json.loads((scratch / check).read_text())
        trained(record["losses"], record["val_accuracies"], cmd, record.get("best_epoch"))


@pytest.mark.parametrize("doc,body,line", python_blocks(), ids=[f"{d}:{n}" for d, _, n in python_blocks()])
def test_python_example(doc, body, line, scratches, monkeypatch, capsys, request):
    from manualnn import TrainResult
    monkeypatch.chdir(scratches[doc])
    if native_cache_for(body, request):
        monkeypatch.setenv("MANUALNN_NATIVE_CACHE", native_cache_for(body, request))
    namespace = {"__name__": f"readme_line{line}"}
    exec(compile(body, f"{doc}:{line}", "exec"), namespace)
    for name, value in namespace.items():
        if isinstance(value, TrainResult):
            trained(value.losses, value.val_accuracies, f"{doc}:{line} {name}", value.best_epoch,
                    real_data=bool(REAL_DATA.search(body)))
