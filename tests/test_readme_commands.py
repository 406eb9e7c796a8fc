"""The README's commands as tests: every command of a fenced ```bash block of README.md (and of the
docs/*.md files that have such blocks) works as written.

A block is split into commands (backslash continuations joined, comment-only lines skipped; a
command's trailing ``# ...`` comment is its annotation). Then, in order, from the root of a
temporary copy of the working tree (the tracked files and the untracked ones git does not
ignore, with ``../shared/data`` linked beside it):

* a command with a placeholder (a word in angle brackets, ``<run_folder>``) or marked ``# long``
  on its first line is checked, not run: every path it names that is not a placeholder and not an
  output exists (paths under ``../shared/data`` only when that data is there), every ``--flag``
  appears in its program's ``--help``, every ``key=value`` override names a config key (and the
  config loads with them), every ``--cfg_file`` exists, and ``--help`` exits 0;
* ``pip``, ``apt-get`` and virtual-environment lines are not run; the files they name must exist;
* every other command runs as written (``bash``, the test's interpreter first on ``PATH`` so that
  ``python`` is this one) and must exit 0 within a few minutes. A command that needs
  ``results/synthetic`` (the main job's run) gets a tiny stand-in trained once at that place in
  the copy; one that needs data under ``../shared/data`` that is absent is skipped. A command that
  trains, runs the tests or serves a page must carry ``# long``; one that is not marked fails
  without being run.

After the commands, ``git status`` of the copy must be clean: every output is ignored.

The test prints how many commands it ran and how many it checked without running. Its own tests
(a planted wrong flag, a missing path, a placeholder, ``# long``) work on small Markdown strings,
whatever README is present.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"  # the real data beside the checkout, never copied
BX_DIR = Path(os.environ.get("MOTION2TEXT_BX_DIR", SHARED / "BX"))  # as tests/conftest.py
RUN_TIMEOUT = float(os.environ.get("MOTION2TEXT_README_TIMEOUT", 300))  # seconds a run may take
QUICK = float(os.environ.get("MOTION2TEXT_README_QUICK", 180))  # longer than this: mark it # long

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
SHELL = {"bash", "sh", "shell"}
PLACEHOLDER = re.compile(r"<[A-Za-z][\w.\-/]*>")
SENTINEL = "__placeholder__"
LONG_NOTE = re.compile(r"^long\b", re.IGNORECASE)
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")
HELP_FLAG = re.compile(r"(?:^|[\s,\[(|])(-{1,2}[A-Za-z0-9][\w-]*)")
SUBCOMMANDS = re.compile(r"\{([\w-]+(?:,[\w-]+)+)\}")
OPERATORS = {"&&", "||", "|", ";", "&", "|&"}
REDIRECTS = {">", ">>", ">&", "&>", "&>>", "<", "<<", "<<<", ">|"}
OUTPUT_FLAGS = {"--out", "--out-dir", "--out_dir", "--output", "--output-dir", "--output_dir", "--json",
                "--pictures", "--trace", "--save"}
EXTENSIONS = {".py", ".yaml", ".yml", ".pkl", ".pk", ".npy", ".npz", ".pt", ".json", ".jsonl", ".png", ".gif",
              ".mp4", ".txt", ".md", ".csv", ".safetensors", ".log"}
SETUP = {"pip", "pip3", "apt-get", "apt", "sudo", ".", "source", "conda", "brew"}
# programs that read their config's keys from key=value words: the dataclass of those keys
OVERRIDES = {"train_t5_stagcn.py": ("configs.schema", "Config"), "evaluation.protocol": ("configs.schema", "Config"),
             "alignment.train_carl": ("alignment.config", "CarlConfig")}
# the stand-in for results/synthetic: configs/synthetic.yaml's data (the same clip names) and a tiny
# model trained for one epoch (tests/test_train.py's sizes)
STAND_IN = ["model.encoder.channels=[8,16]", "model.encoder.strides=[1,2]", "model.encoder.num_attention_graphs=1",
            "model.t5.config={d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, num_decoder_layers: 1, num_heads: 4}",
            "model.tokenizer.vocab_size=200", "train.epochs=1", "eval.use_java=false", "eval.max_new_tokens=6",
            "eval.at_start=false", "eval.every=1", "eval.num_logged_pictures=0"]


# ============================================================================ reading ==========
@dataclass
class Command:
    """One command of a bash block: its text (continuations joined, annotation removed)."""

    source: str
    line: int
    text: str
    note: str = ""

    @property
    def long(self) -> bool:
        return bool(LONG_NOTE.match(self.note))

    @property
    def placeholders(self) -> list[str]:
        return PLACEHOLDER.findall(self.text)

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}:" + re.sub(r"\s+", "_", self.text)[:70]


def bash_blocks(markdown: str) -> list[tuple[int, list[str]]]:
    """``(line number of the block's first line, its lines)`` of every fenced bash block."""
    lines, blocks, i = markdown.splitlines(), [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0])):
            j += 1
        if language in SHELL:
            blocks.append((i + 2, lines[i + 1:j]))
        i = j + 1
    return blocks


def strip_comment(line: str) -> tuple[str, str]:
    """``(code, comment)``: a ``#`` outside quotes, at the start or after white space, begins a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1:].strip()
    return line, ""


def split_commands(markdown: str, source: str = "README.md") -> list[Command]:
    """Every command of every bash block of ``markdown``, in order."""
    commands = []
    for first, body in bash_blocks(markdown):
        k = 0
        while k < len(body):
            code, note = strip_comment(body[k])
            start = first + k
            if not code.strip():
                k += 1
                continue
            parts = [code.strip()]
            while parts[-1].endswith("\\") and k + 1 < len(body):
                parts[-1] = parts[-1][:-1].rstrip()
                k += 1
                more, later = strip_comment(body[k])
                parts.append(more.strip())
                note = note or later
            commands.append(Command(source, start, " ".join(p for p in parts if p), note))
            k += 1
    return commands


def documents(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and the docs/*.md files that hold a bash block."""
    docs = sorted((root / "docs").glob("*.md")) if (root / "docs").is_dir() else []
    return [p for p in [root / "README.md", *docs] if p.is_file() and bash_blocks(p.read_text(encoding="utf-8"))]


def all_commands(root: Path = REPO_ROOT) -> list[Command]:
    return [c for p in documents(root) for c in split_commands(p.read_text(encoding="utf-8"),
                                                               p.relative_to(root).as_posix())]


# ============================================================================ parsing ==========
def words_of(text: str) -> list[str]:
    """Shell words and operators of a command; a placeholder becomes one word holding SENTINEL."""
    text = PLACEHOLDER.sub(lambda m: SENTINEL + re.sub(r"\W", "_", m.group(0)[1:-1]), text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars="();<>|&")
    lexer.whitespace_split = True
    return list(lexer)


def segments(words: list[str]) -> list[list[str]]:
    """The simple commands of a command line (split at ``&&``, ``|``, ``;`` ...)."""
    out: list[list[str]] = [[]]
    for word in words:
        if word in OPERATORS:
            out.append([])
        else:
            out[-1].append(word)
    return [s for s in out if s]


@dataclass
class Program:
    """What a simple command runs: its --help command line (None: not a Python program we can ask)
    and the words that are its arguments."""

    name: str
    help: list[str] | None
    args: list[str]
    launcher: "Program | None" = None
    lead: list[str] = field(default_factory=list)  # env assignments and the interpreter's words


def program_of(words: list[str]) -> Program | None:
    i = 0
    while i < len(words) and ENV_ASSIGNMENT.match(words[i]):
        i += 1
    lead, words = words[:i], words[i:]
    if not words:
        return None
    head = os.path.basename(words[0])
    if head in ("python", "python3"):
        j = 1
        while j < len(words) and words[j].startswith("-") and words[j] not in ("-m", "-c"):
            j += 1
        if j + 1 < len(words) and words[j] == "-m":
            return Program(words[j + 1], ["python", "-m", words[j + 1]], words[j + 2:], lead=lead + words[:j + 2])
        if j < len(words) and words[j].endswith(".py"):
            return Program(words[j], ["python", words[j]], words[j + 1:], lead=lead + words[:j + 1])
        return Program(head, None, words[j:], lead=lead + words[:j])
    if head == "torchrun":
        k = next((n for n in range(1, len(words)) if words[n].endswith(".py")), None)
        if k is not None:
            launcher = Program("torchrun", ["python", "-m", "torch.distributed.run"], words[1:k])
            return Program(words[k], ["python", words[k]], words[k + 1:], launcher=launcher, lead=lead + words[:k + 1])
    if head == "pytest":
        return Program("pytest", ["python", "-m", "pytest"], words[1:], lead=lead + words[:1])
    return Program(head, None, words[1:], lead=lead + words[:1])


def is_setup(words: list[str]) -> bool:
    """pip / apt-get / a virtual environment: installing, not using the project."""
    program = program_of(words)
    if program is None:
        return False
    first = os.path.basename(program.lead[-1]) if program.lead else program.name
    return first in SETUP or program.name in ("venv", "pip", "ensurepip")


def long_reason(command: Command) -> str:
    """Why an unmarked command may not run here ("" when it may)."""
    for words in segments(words_of(command.text)):
        program = program_of(words)
        if program is None:
            continue
        asks_help = any(a in ("-h", "--help") for a in program.args)
        if program.name == "pytest":
            return "runs the test suite"
        if program.launcher is not None and not asks_help:
            return "trains on several processes"
        if program.name in ("train_t5_stagcn.py", "alignment.train_carl") and not asks_help:
            return "trains"
        if program.name == "evaluation.protocol" and not asks_help and "--baselines-only" not in program.args:
            return "trains or captions every run of the protocol"
        if program.name == "demo.py" and not asks_help:
            return "serves a web page until it is stopped"
        if program.name.startswith("bench.") and "--full" in program.args:
            return "runs the long grid of a benchmark"
    return ""


def is_path_like(word: str) -> bool:
    return ("/" in word or Path(word).suffix.lower() in EXTENSIONS) and "://" not in word \
        and not any(c in word for c in "$*?{}") and not word.startswith("-")


# ============================================================================ checking =========
@functools.lru_cache(maxsize=None)
def help_of(argv: tuple[str, ...], root: str) -> tuple[int, str]:
    """(exit status, output) of ``argv --help`` run from ``root`` with this interpreter."""
    cmd = [sys.executable if a == "python" else a for a in argv] + ["--help"]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env=child_env())
    except subprocess.TimeoutExpired:
        return 124, "--help did not answer in 120 s"
    return done.returncode, done.stdout + done.stderr


def flags_in(help_text: str) -> set[str]:
    return set(HELP_FLAG.findall(help_text))


def config_key_exists(cls: type, key: str) -> bool:
    """Is dotted ``key`` a field of dataclass ``cls`` (any sub-key of a dict field counts)?"""
    parts = key.split(".")
    for n, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return False
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        hint = hints[part]
        if n == len(parts) - 1:
            return True
        if dataclasses.is_dataclass(hint):
            cls = hint
            continue
        return (typing.get_origin(hint) or hint) is dict
    return True


def data_present(path: str, root: Path) -> bool:
    """``../shared/data/<name>/...``: is that data set beside this checkout?"""
    parts = Path(path).parts
    if len(parts) >= 4 and parts[:3] == ("..", "shared", "data"):
        return (root / Path(*parts[:4])).exists()
    return True


def static_problems(command: Command, root: Path, produced: frozenset[str] = frozenset()) -> list[str]:
    """What is wrong with a command that is checked without running (see the module docstring).
    ``produced``: run folders an earlier command of the README makes (checked, not run), which a
    later one may name."""
    words = words_of(command.text)
    problems = bracket_problems(words)
    for simple in segments(words):
        problems += segment_problems(simple, root, setup=is_setup(simple), produced=produced)
    return problems


TRAINERS = ("train_t5_stagcn.py", "alignment.train_carl")


def run_folders_made(command: Command, root: Path) -> set[str]:
    """``results/<experiment>`` of a training command (``experiment=`` override, else the config's
    ``experiment`` key, else its file's stem): where its run will be, for the commands after it."""
    import yaml

    made = set()
    for simple in segments(words_of(command.text)):
        program = program_of(simple)
        if program is None or not any(t in " ".join(simple) for t in TRAINERS):
            continue
        args = program.args
        configs = [args[n + 1] for n, a in enumerate(args[:-1]) if a in ("--cfg_file", "--cfg-file")]
        if not configs or SENTINEL in configs[0] or not (root / configs[0]).is_file():
            continue
        named = [a.split("=", 1)[1] for a in args if a.startswith("experiment=")]
        stated = (yaml.safe_load((root / configs[0]).read_text()) or {}).get("experiment")
        made.add(f"results/{(named or [stated or Path(configs[0]).stem])[0]}")
    return made


def bracket_problems(words: list[str]) -> list[str]:
    if any(w.startswith("[") and (w[1:].startswith("-") or w.endswith("]")) for w in words):
        return ["optional arguments in brackets: pasted into a shell they break the command "
                "(write the command one way, or use a placeholder)"]
    return []


def segment_problems(words: list[str], root: Path, setup: bool = False,
                     produced: frozenset[str] = frozenset()) -> list[str]:
    problems: list[str] = []
    program = program_of(words)
    if program is None:
        return problems
    # 1. paths: inputs must exist (outputs, placeholders and ../shared/data that is absent are not checked)
    previous = ""
    for word in program.args + (program.launcher.args if program.launcher else []) + program.lead[-1:]:
        value, flag = word, previous
        if word.startswith("-") and "=" in word:
            flag, value = word.split("=", 1)
        elif OVERRIDE.match(word):
            value = word.split("=", 1)[1]
        previous = word
        if flag in OUTPUT_FLAGS or flag in REDIRECTS - {"<", "<<", "<<<"} or SENTINEL in value:
            continue
        if flag in ("--cfg_file", "--cfg-file") and not setup:
            continue  # step 2
        if not is_path_like(value) or value.startswith(".venv"):
            continue
        if not data_present(value, root):
            continue
        if not (root / value).exists() and not any(value == p or value.startswith(p + "/") for p in produced):
            problems.append(f"{value}: no such file or folder")
    if setup:
        return problems
    # 2. --cfg_file names a config that exists
    configs = [program.args[n + 1] for n, a in enumerate(program.args[:-1]) if a in ("--cfg_file", "--cfg-file")]
    configs += [a.split("=", 1)[1] for a in program.args if a.startswith(("--cfg_file=", "--cfg-file="))]
    for cfg in configs:
        if SENTINEL not in cfg and not (root / cfg).is_file() and not any(cfg.startswith(p + "/") for p in produced):
            problems.append(f"--cfg_file {cfg}: no such config")
    # 3. flags and --help
    for prog, args in ([(program.launcher, program.launcher.args)] if program.launcher else []) + [(program, program.args)]:
        if prog.help is None:
            continue
        status, text = help_of(tuple(prog.help), str(root))
        if status != 0:
            problems.append(f"`{' '.join(prog.help)} --help` exits {status}: {text.strip()[-300:]}")
            continue
        positional = [a for a in args if not a.startswith("-")]
        choices = SUBCOMMANDS.search(text.split("\n\n")[0])
        if choices and positional and positional[0] in choices.group(1).split(","):
            status, text = help_of(tuple(prog.help) + (positional[0],), str(root))
            if status != 0:
                problems.append(f"`{' '.join(prog.help)} {positional[0]} --help` exits {status}")
                continue
        known = flags_in(text)
        for arg in args:
            if arg == "--":
                break
            if arg.startswith("-") and len(arg) > 1 and not re.match(r"^-\d", arg) and SENTINEL not in arg:
                name = arg.split("=", 1)[0]
                if name not in known:
                    problems.append(f"{name}: not an option of {prog.name} (not in its --help)")
    # 4. key=value overrides name config keys; without placeholders the config loads with them
    if program.name in OVERRIDES:
        module, cls_name = OVERRIDES[program.name]
        mod = __import__(module, fromlist=[cls_name])
        overrides = [a for a in program.args if OVERRIDE.match(a) and not a.startswith("-")]
        for item in overrides:
            key = item.split("=", 1)[0]
            if not config_key_exists(getattr(mod, cls_name), key):
                problems.append(f"{key}: no such config key ({module})")
        cfg = configs[0] if configs else None
        if overrides and not problems and SENTINEL not in " ".join(overrides) and (cfg is None or SENTINEL not in cfg):
            try:
                mod.load_config(str(root / cfg) if cfg else None, overrides)
            except Exception as exc:  # ConfigError, or a value the config refuses
                problems.append(f"the config does not load with {' '.join(overrides)}: {exc}")
    return problems


# ============================================================================ running ==========
def child_env() -> dict[str, str]:
    """This interpreter's folder first on PATH (``python`` is this one), one thread, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_command(text: str, root: Path, timeout: float = RUN_TIMEOUT) -> tuple[int | None, str, float]:
    """(exit status or None on timeout, the output's tail, seconds) of ``text`` run by bash in ``root``."""
    start = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", text], cwd=root, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and every process it started
        out, _ = proc.communicate()
        status = None
    return status, out[-3000:], time.monotonic() - start


def data_needed(command: Command, root: Path) -> list[str]:
    """The ../shared/data sets a command reads (by name, or through its --cfg_file) that are absent."""
    texts = [command.text]
    for words in segments(words_of(command.text)):
        program = program_of(words)
        for n, a in enumerate(program.args[:-1] if program else []):
            if a in ("--cfg_file", "--cfg-file") and (root / program.args[n + 1]).is_file():
                texts.append((root / program.args[n + 1]).read_text(encoding="utf-8"))
    names = {m for t in texts for m in re.findall(r"\.\./shared/data/([\w.-]+)", t)}
    return sorted(n for n in names if not (root.parent / "shared" / "data" / n).exists())


@dataclass
class Workspace:
    root: Path
    tally: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    produced: set[str] = field(default_factory=set)  # run folders of earlier trainings (checked, not run)

    def stand_in(self) -> None:
        """A tiny run at results/synthetic, made once (configs/synthetic.yaml's data, one epoch)."""
        if (self.root / "results" / "synthetic" / "checkpoints").is_dir():
            return
        status, out, seconds = run_command(shlex.join(["python", "train_t5_stagcn.py", "--cfg_file",
                                                       "configs/synthetic.yaml", *STAND_IN]), self.root)
        assert status == 0, f"the stand-in for results/synthetic did not train:\n{out}"
        self.notes.append(f"results/synthetic: a tiny stand-in trained in {seconds:.0f} s")


def copy_tree(root: Path, base: Path) -> Path:
    """The tracked and the untracked-but-not-ignored files of ``root`` copied to ``base/<name>``,
    ``base/shared/data`` linking the data beside the checkout; a fresh git repository of them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    copy = base / root.name
    for name in filter(None, listed):
        source = root / name
        if not (source.is_file() or source.is_symlink()):
            continue  # deleted in the working tree
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy / name, follow_symlinks=False)
    data = base / "shared" / "data"
    data.mkdir(parents=True)
    for entry in sorted(SHARED.iterdir()) if SHARED.is_dir() else []:
        (data / entry.name).symlink_to(entry)
    if BX_DIR.is_dir() and not (data / "BX").exists():
        (data / "BX").symlink_to(BX_DIR)
    git = ["git", "-c", "user.name=readme-test", "-c", "user.email=readme-test@localhost", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + args, cwd=copy, check=True, capture_output=True)
    return copy


def check_or_run(command: Command, ws: Workspace) -> str:
    """Check or run one command in ``ws``; the kind of handling ("ran", "checked", ...). Fails
    (``pytest.fail``) naming the command and its problems; skips when its data is absent."""
    where = f"{command.source}:{command.line}: {command.text}"
    words = words_of(command.text)
    if "results/synthetic" in command.text:
        ws.stand_in()
    if all(is_setup(s) for s in segments(words)):
        problems = static_problems(command, ws.root)
        if problems:
            pytest.fail(f"{where}\n  " + "\n  ".join(problems), pytrace=False)
        return "setup"
    reason = "" if command.long or command.placeholders else long_reason(command)
    if command.long or command.placeholders or reason:
        problems = static_problems(command, ws.root, frozenset(ws.produced))
        ws.produced |= run_folders_made(command, ws.root)
        if reason:
            problems.insert(0, f"{reason}: mark it `# long` on its first line (checked, not run)")
        if problems:
            pytest.fail(f"{where}\n  " + "\n  ".join(problems), pytrace=False)
        return "checked"
    missing = data_needed(command, ws.root)
    if missing:
        pytest.skip(f"{where}: needs ../shared/data/{', '.join(missing)}, absent here")
    problems = bracket_problems(words)
    status, out, seconds = run_command(command.text, ws.root)
    if status is None:
        problems.append(f"did not finish in {RUN_TIMEOUT:.0f} s: mark it `# long` or make it quicker")
    elif status != 0:
        problems.append(f"exit status {status}; output:\n{out}")
    elif seconds > QUICK:
        problems.append(f"took {seconds:.0f} s (more than {QUICK:.0f}): mark it `# long` or make it quicker")
    if problems:
        pytest.fail(f"{where}\n  " + "\n  ".join(problems), pytrace=False)
    return "ran"


# ============================================================================ the harness's tests
SAMPLE = """\
Some text.

```bash
# a comment-only line
python -m evaluation.score --help          # the scorer's options
python -m evaluation.score --predictions <predictions.json> \\
    --references <references.pkl> --no-java
python train_t5_stagcn.py --cfg_file configs/synthetic.yaml train.lr=3e-4   # long: trains, minutes
pip install -r requirements.txt
```

```python
print("not a shell block")
```
"""


def test_blocks_are_split_into_commands_with_annotations():
    commands = split_commands(SAMPLE, "sample.md")
    assert [c.text for c in commands] == [
        "python -m evaluation.score --help",
        "python -m evaluation.score --predictions <predictions.json> --references <references.pkl> --no-java",
        "python train_t5_stagcn.py --cfg_file configs/synthetic.yaml train.lr=3e-4",
        "pip install -r requirements.txt"]
    assert [c.line for c in commands] == [5, 6, 8, 9]
    assert commands[0].note == "the scorer's options" and not commands[0].long
    assert commands[1].placeholders == ["<predictions.json>", "<references.pkl>"] and not commands[1].long
    assert commands[2].long and commands[2].note.startswith("long: trains")
    assert is_setup(words_of(commands[3].text)) and not is_setup(words_of(commands[0].text))
    assert strip_comment("echo 'a # b'  # note") == ("echo 'a # b'  ", "note")


def test_a_correct_sample_passes_its_checks():
    for command in split_commands(SAMPLE, "sample.md")[1:]:
        assert static_problems(command, REPO_ROOT) == [], command.text


def check(markdown_line: str) -> list[str]:
    (command,) = split_commands(f"```bash\n{markdown_line}\n```\n")
    return static_problems(command, REPO_ROOT)


def test_a_run_folder_made_by_an_earlier_training_may_be_named():
    """``results/boxing/...`` exists only after the BX training: a checked command may name it when
    an earlier command of the README trains that run, and not otherwise."""
    (train,) = split_commands("```bash\npython train_t5_stagcn.py --cfg_file configs/boxing.yaml   # long\n```\n")
    (named,) = split_commands("```bash\npython train_t5_stagcn.py --cfg_file configs/boxing.yaml "
                              "experiment=bx2   # long\n```\n")
    assert run_folders_made(train, REPO_ROOT) == {"results/boxing"}
    assert run_folders_made(named, REPO_ROOT) == {"results/bx2"}
    (score,) = split_commands("```bash\npython -m evaluation.score --predictions results/boxing/predictions/"
                              "test_best.json --references configs/boxing.yaml   # long\n```\n")
    assert static_problems(score, REPO_ROOT, frozenset({"results/boxing"})) == []
    assert static_problems(score, REPO_ROOT) == ["results/boxing/predictions/test_best.json: no such file or folder"]


def test_a_planted_wrong_flag_fails_the_check():
    problems = check("python -m evaluation.score --predictions <p.json> --references <r.pkl> --no-such-flag")
    assert len(problems) == 1 and "--no-such-flag: not an option of evaluation.score" in problems[0]
    # a subcommand's flags come from the subcommand's --help
    assert check("python -m inference.pictures curves <run_folder> --out results/c.png") == []
    assert "--out-dir" in " ".join(check("python -m inference.pictures curves <run_folder> --out-dir x"))
    # torchrun's own options are checked against torchrun's --help
    assert check("torchrun --nproc_per_node 2 train_t5_stagcn.py --cfg_file configs/synthetic.yaml  # long") == []
    assert "--nproc_per_nod:" in " ".join(check("torchrun --nproc_per_nod 2 train_t5_stagcn.py  # long"))


def test_a_planted_missing_path_fails_the_check():
    problems = check("python caption.py --run results/no_such_run_here <clip.npy>")
    assert problems == ["results/no_such_run_here: no such file or folder"]
    assert check("python caption.py --run <run_folder> results/no/such/clip.npy --json") == [
        "results/no/such/clip.npy: no such file or folder"]
    # outputs are not inputs: they need not exist
    assert check("python -m evaluation.score --predictions <p.json> --references <r.pkl> --out results/x/m.json") == []
    assert check("pip install -r requirements-none.txt") == ["requirements-none.txt: no such file or folder"]


def test_config_files_and_keys_are_checked():
    assert check("python train_t5_stagcn.py --cfg_file configs/synthetic.yaml train.batch_size=4  # long") == []
    assert check("python train_t5_stagcn.py --cfg_file configs/no_such.yaml  # long") == [
        "--cfg_file configs/no_such.yaml: no such config"]
    assert check("python train_t5_stagcn.py --cfg_file=CONFIG  # long") == ["--cfg_file CONFIG: no such config"]
    assert check("python train_t5_stagcn.py --cfg_file configs/synthetic.yaml train.btach_size=4  # long") == [
        "train.btach_size: no such config key (configs.schema)"]
    problems = check("python train_t5_stagcn.py --cfg_file configs/synthetic.yaml train.batch_size=many  # long")
    assert len(problems) == 1 and "does not load" in problems[0]
    assert check("python -m alignment.train_carl --cfg_file configs/carl_synthetic.yaml train.epochs=2  # long") == []
    assert check("python train_t5_stagcn.py --cfg_file <config.yaml> train.init_from=<export_folder>  # long") == []


def test_brackets_and_unmarked_long_commands_are_refused():
    problems = check("python -m models.export --run <run> --out <export> [--ckpt best|last]")
    assert any("brackets" in p for p in problems)
    for text, why in (("python train_t5_stagcn.py --cfg_file configs/synthetic.yaml", "trains"),
                      ("python -m pytest -q", "test suite"), ("python demo.py --run results/synthetic", "serves"),
                      ("torchrun --nproc_per_node 2 train_t5_stagcn.py", "several processes")):
        (command,) = split_commands(f"```bash\n{text}\n```\n")
        assert why in long_reason(command), text
    (marked,) = split_commands("```bash\npython -m pytest -q   # long: about 7 minutes\n```\n")
    assert marked.long and static_problems(marked, REPO_ROOT) == []
    (quick,) = split_commands("```bash\npython train_t5_stagcn.py --help\n```\n")
    assert long_reason(quick) == ""


def test_running_a_command_reports_its_failure():
    status, out, _ = run_command("python -m evaluation.score --help", REPO_ROOT)
    assert status == 0 and "exit status: 0 on success" in out
    status, out, _ = run_command("python -m evaluation.score --predictions p --references r --no-such-flag", REPO_ROOT)
    assert status == 2 and "--no-such-flag" in out
    status, _, seconds = run_command("sleep 30", REPO_ROOT, timeout=1)
    assert status is None and seconds < 20
    status, out, _ = run_command("python -c 'import sys; print(sys.executable)'", REPO_ROOT)
    assert Path(out.strip()).parent == Path(sys.executable).parent  # `python` is the test's interpreter


CONFORMING = """\
```bash
python train_t5_stagcn.py --cfg_file configs/synthetic.yaml   # long: the main job, minutes
python caption.py --run results/synthetic results/synthetic/data/test.pkl \\
    --video_name test_squat_001_lean --standard results/synthetic/data/standard.pkl --json
python -m inference.pictures curves results/synthetic        # writes results/curves.png
python caption.py --run <run_folder> <your_clip.npy>
```
"""


@pytest.mark.slow
def test_a_sample_readme_runs_in_a_copy_and_leaves_only_ignored_files(tmp_path):
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    ws = Workspace(copy_tree(REPO_ROOT, tmp_path))
    kinds = [check_or_run(c, ws) for c in split_commands(CONFORMING, "sample.md")]
    assert kinds == ["checked", "ran", "ran", "checked"]
    assert (ws.root / "results" / "curves.png").is_file() and ws.notes  # the stand-in was trained
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ws.root,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
    (broken,) = split_commands("```bash\npython -m inference.pictures curves results/synthetic results/other_run\n```")
    with pytest.raises(pytest.fail.Exception, match="results/other_run: no such run folder"):
        check_or_run(broken, ws)
    (unmarked,) = split_commands("```bash\npython train_t5_stagcn.py --cfg_file configs/synthetic.yaml\n```")
    with pytest.raises(pytest.fail.Exception, match="mark it `# long`"):
        check_or_run(unmarked, ws)


# ============================================================================ the README =======
COMMANDS = all_commands()
TALLY: Counter = Counter()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, request):
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("the README's commands run in a copy of a git checkout")
    ws = Workspace(copy_tree(REPO_ROOT, tmp_path_factory.mktemp("readme")))
    yield ws
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    line = (f"README commands ({', '.join(p.relative_to(REPO_ROOT).as_posix() for p in documents())}): "
            f"{len(COMMANDS)} in all; ran {TALLY['ran']}, checked without running {TALLY['checked']}, "
            f"install lines checked for their files {TALLY['setup']}, skipped {TALLY['skipped']}, "
            f"failed {TALLY['failed']}" + "".join(f"; {n}" for n in ws.notes))
    if reporter is not None and capture is not None:  # shown whatever the capture mode
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)
    else:
        print(line)


@pytest.mark.readme
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(command, workspace):
    try:
        TALLY[check_or_run(command, workspace)] += 1
    except pytest.skip.Exception:
        TALLY["skipped"] += 1
        raise
    except BaseException:
        TALLY["failed"] += 1
        raise


@pytest.mark.readme
def test_readme_commands_leave_only_ignored_files(workspace):
    """Run after the commands: what they wrote is ignored by git (results/, bench/results/, ...)."""
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=workspace.root,
                          capture_output=True, text=True, check=True)
    assert done.stdout == "", "the README's commands left files git does not ignore:\n" + done.stdout[:3000]
