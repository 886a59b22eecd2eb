"""Import Agent World Model (AWM) JSONL files into bundles (formats: ../shared/awm/FORMAT.md).

One bundle per scenario. The seed is made deterministic by pinning SQLite wall-clock functions to a fixed
instant; each task's `verify_task_completion` becomes `verify_task_<idx>` in one verifiers.py, with each
section marked so `awm_export` can give AWM back the code it came from.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import logging
import re
import sqlite3
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agentworld.bundle.model import Bundle, BundleError, Counts, EnvManifest, Task, ToolCall, write_bundle

log = logging.getLogger(__name__)

FIXED_INSTANT = "2025-06-01 12:00:00"
FIXED_DATE, FIXED_TIME = FIXED_INSTANT.split(" ")

F_SCENARIO = "gen_scenario.jsonl"
F_TASKS = "gen_tasks.jsonl"
F_DB = "gen_db.jsonl"
F_SAMPLE = "gen_sample.jsonl"
F_SPEC = "gen_spec.jsonl"
F_ENVS = "gen_envs.jsonl"
F_VERIFIER = "gen_verifier.pure_code.jsonl"
F_SOLUTIONS = "solutions.jsonl"
REQUIRED_FILES = (F_TASKS, F_DB, F_SAMPLE, F_ENVS, F_VERIFIER)

AWM_VERIFIER = "verify_task_completion"
# One marker line opens each task's section of verifiers.py; awm_export splits on it.
# `from __future__` imports are hoisted to the top of verifiers.py; the marker lists the ones a section had.
MARKER_RE = re.compile(
    r"^# === AWM verifier (?P<func>\w+) \(task_idx (?P<idx>\d+), (?P<mode>renamed|nested)"
    r"(?:, future (?P<future>[\w,]+))?\) ===$"
)
NEST_INDENT = "    "


class AwmFormatError(BundleError):
    """An AWM input file is malformed; the message names the file and line."""


@dataclass
class SkippedScenario:
    scenario: str
    reason: str


class ImportResult(list[Path]):
    """The bundle directories written (it is a list), plus what was skipped or worth a warning."""

    def __init__(self) -> None:
        super().__init__()
        self.bundles: list[Bundle] = []
        self.skipped: list[SkippedScenario] = []
        self.warnings: list[str] = []


def normalise_name(name: str) -> str:
    """AWM's scenario name normalisation: lowercase, non [a-z0-9_] -> '_', runs collapsed, edges stripped."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", name.lower())).strip("_")


# --------------------------------------------------------------------------------------------------------------
# SQL scanning: strings, quoted identifiers and comments must never be touched by pinning or statement splitting.

_SQL_TOKEN_RE = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*'?)
  | (?P<ident>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
  | (?P<comment>--[^\n]*|/\*(?:.|\n)*?(?:\*/|\Z))
  | (?P<space>\s+)
  | (?P<word>[A-Za-z_\x80-\U0010FFFF][A-Za-z0-9_$\x80-\U0010FFFF]*)
  | (?P<number>[0-9][A-Za-z0-9_.]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class _Tok:
    kind: str
    text: str


def _sql_tokens(sql: str) -> list[_Tok]:
    return [_Tok(m.lastgroup or "other", m.group()) for m in _SQL_TOKEN_RE.finditer(sql)]


_KEYWORD_PINS = {
    "current_timestamp": f"'{FIXED_INSTANT}'",
    "current_date": f"'{FIXED_DATE}'",
    "current_time": f"'{FIXED_TIME}'",
}
# Which argument positions of SQLite's date functions are time values (where 'now' means the wall clock).
_TIME_ARG_POSITIONS = {
    "date": (0,),
    "time": (0,),
    "datetime": (0,),
    "julianday": (0,),
    "unixepoch": (0,),
    "strftime": (1,),
    "timediff": (0, 1),
}
# Number of leading arguments before the optional time value; a call with exactly that many reads the clock.
_IMPLICIT_NOW_ARITY = {"date": 0, "time": 0, "datetime": 0, "julianday": 0, "unixepoch": 0, "strftime": 1}


# A word after these names a table (e.g. `INSERT INTO date (...)`), so `word (` there is no function call.
_NAME_CONTEXT = {"into", "table", "exists", "on", "references", "update", "from", "join", "index", "view", "trigger"}


@dataclass
class _Call:
    func: str | None  # lowercase date-function name, or None for any other parenthesis
    args: list[list[int]] = field(default_factory=lambda: [[]])  # token indexes of significant tokens per argument


def pin_wall_clock(sql: str) -> str:
    """Replace SQLite wall-clock reads in `sql` with the fixed instant 2025-06-01 12:00:00.

    Handles CURRENT_TIMESTAMP/CURRENT_DATE/CURRENT_TIME and a 'now' time value (or an omitted one) in
    date/time/datetime/julianday/unixepoch/strftime/timediff. String literals, quoted identifiers and
    comments are left alone, so data that merely contains "now" is unchanged.
    """
    toks = _sql_tokens(sql)
    significant = [i for i, t in enumerate(toks) if t.kind not in ("space", "comment")]
    stack: list[_Call] = []
    inserts: dict[int, str] = {}  # token index -> text inserted before it
    for pos, i in enumerate(significant):
        tok = toks[i]
        prev = toks[significant[pos - 1]] if pos > 0 else None
        nxt = toks[significant[pos + 1]] if pos + 1 < len(significant) else None
        after_dot = prev is not None and prev.text == "."
        if tok.kind == "word" and not after_dot:
            low = tok.text.lower()
            if low in _KEYWORD_PINS and not (nxt is not None and nxt.text == "("):
                tok.text, tok.kind = _KEYWORD_PINS[low], "string"
        if tok.text == "(":
            is_func = (
                prev is not None
                and prev.kind == "word"
                and not _is_after_dot(toks, significant, pos - 1)
                and not (pos > 1 and toks[significant[pos - 2]].text.lower() in _NAME_CONTEXT)
            )
            func = (
                prev.text.lower() if is_func and prev is not None and prev.text.lower() in _TIME_ARG_POSITIONS else None
            )
            stack.append(_Call(func))
            continue
        if not stack:
            continue
        call = stack[-1]
        if tok.text == ",":
            call.args.append([])
        elif tok.text == ")":
            stack.pop()
            if call.func is not None:
                _pin_call(call, toks, i, inserts)
            if stack:
                stack[-1].args[-1].append(i)
        else:
            call.args[-1].append(i)
    parts = []
    for i, t in enumerate(toks):
        if i in inserts:
            parts.append(inserts[i])
        parts.append(t.text)
    return "".join(parts)


def reads_wall_clock(sql: str) -> bool:
    """Whether `sql` calls a wall-clock function that pinning would replace ('now' as plain string data does not count)."""
    return pin_wall_clock(sql) != sql


def _is_after_dot(toks: list[_Tok], significant: list[int], pos: int) -> bool:
    return pos > 0 and toks[significant[pos - 1]].text == "."


def _pin_call(call: _Call, toks: list[_Tok], close_index: int, inserts: dict[int, str]) -> None:
    assert call.func is not None
    args = call.args if call.args != [[]] else []
    for p in _TIME_ARG_POSITIONS[call.func]:
        if p < len(args) and len(args[p]) == 1:
            tok = toks[args[p][0]]
            if tok.kind == "string" and tok.text[1:-1].lower() == "now":
                tok.text = f"'{FIXED_INSTANT}'"
    if len(args) == _IMPLICIT_NOW_ARITY.get(call.func, -1):
        inserts[close_index] = f", '{FIXED_INSTANT}'" if args else f"'{FIXED_INSTANT}'"


def split_sql(sql: str) -> list[str]:
    """Split a script into complete statements (each ending with ';'), ignoring ';' in strings and comments."""
    out: list[str] = []
    buf: list[str] = []
    for tok in _sql_tokens(sql):
        buf.append(tok.text)
        if tok.text == ";" and sqlite3.complete_statement("".join(buf)):
            stmt = _strip_comment_lines("".join(buf))
            if stmt:
                out.append(stmt)
            buf = []
    rest = _strip_comment_lines("".join(buf))
    if rest:
        out.append(rest if rest.endswith(";") else rest + ";")
    return out


def _strip_comment_lines(text: str) -> str:
    """Drop whole-line `--` comments and blank lines before a statement (the section headers the importer writes)."""
    lines = text.strip().splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines).strip()


# --------------------------------------------------------------------------------------------------------------
# Reading AWM files.


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class ScenarioRec(_Record):
    name: str
    description: str = ""


class TasksRec(_Record):
    scenario: str
    tasks: list[str]


class TableDef(_Record):
    name: str
    ddl: str
    indexes: list[str] = []


class DbSchema(_Record):
    tables: list[TableDef]


class DbRec(_Record):
    scenario: str
    db_schema: DbSchema
    db_path: str = ""


class SampleTable(_Record):
    table_name: str
    reasoning: str = ""
    insert_statements: list[str]


class SampleData(_Record):
    tables: list[SampleTable]


class SampleRec(_Record):
    scenario: str
    sample_data: SampleData | list[SampleTable]

    @property
    def tables(self) -> list[SampleTable]:
        return self.sample_data if isinstance(self.sample_data, list) else self.sample_data.tables


class SpecRec(_Record):
    scenario: str
    api_spec: dict[str, Any]


class EnvsRec(_Record):
    scenario: str
    full_code: str
    db_path: str = ""


class Verification(_Record):
    code: str
    raw_response: str = ""


class VerifierRec(_Record):
    scenario: str
    task_idx: int
    task: str = ""
    verification: Verification


class SolutionCall(_Record):
    tool: str
    arguments: dict[str, Any] = {}


class SolutionRec(_Record):
    scenario: str | None = None
    task_idx: int
    calls: list[SolutionCall] = []
    final_answer: str | None = None


def read_jsonl(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, Any]]:
    """Yield (line number, validated record); raise AwmFormatError naming the file and line on bad input."""
    with path.open(encoding="utf-8-sig") as fh:  # tolerate a BOM
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AwmFormatError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(raw, dict):
                raise AwmFormatError(f"{path}:{lineno}: expected a JSON object, got {type(raw).__name__}")
            try:
                yield lineno, model.model_validate(raw)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors()[:5]
                )
                raise AwmFormatError(f"{path}:{lineno}: {problems}") from exc


def _by_scenario(path: Path, model: type[BaseModel], key: str = "scenario") -> dict[str, Any]:
    if not path.is_file():
        return {}
    out: dict[str, Any] = {}
    for _, rec in read_jsonl(path, model):
        out[normalise_name(getattr(rec, key))] = rec  # a later record for the same scenario wins
    return out


# --------------------------------------------------------------------------------------------------------------
# App code facts.


@functools.lru_cache(maxsize=8)
def _app_calls(code: str) -> tuple[ast.Call, ...] | None:
    """Every call expression in the app, parsed and walked once per distinct code (apps are ~50 KB)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    return tuple(node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.keywords)


def app_title(code: str) -> str | None:
    """The `title=` of the module's FastAPI(...) call, when it is a literal string."""
    for node in _app_calls(code) or ():
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name == "FastAPI":
            for kw in node.keywords:
                if kw.arg == "title" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                    return kw.value.value
    return None


def app_operation_ids(code: str) -> list[str] | None:
    """Every literal `operation_id=` in the app (one per route); None if the code does not parse."""
    calls = _app_calls(code)
    if calls is None:
        return None
    return [
        kw.value.value
        for node in calls
        for kw in node.keywords
        if kw.arg == "operation_id" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
    ]


def spec_endpoint_count(spec: SpecRec) -> int:
    groups = spec.api_spec.get("api_groups", [])
    return sum(len(g.get("endpoints", [])) for g in groups if isinstance(g, dict))


# --------------------------------------------------------------------------------------------------------------
# Verifiers.


class VerifierError(ValueError):
    """A task's verifier code cannot be turned into a bundle verifier."""


@dataclass
class _VerifierCode:
    idx: int
    code: str  # with `from __future__` imports removed
    tree: ast.Module
    func: ast.FunctionDef | ast.AsyncFunctionDef
    futures: list[str]
    bindings: dict[str, str]  # top-level name -> dump of the statement binding it


def _trim(code: str) -> str:
    """Drop blank lines at both ends: they carry nothing, and dropping them makes export/import round-trip."""
    return re.sub(r"\A(?:[ \t]*\r?\n)+", "", code).rstrip()


def _parse_verifier(idx: int, code: str) -> _VerifierCode:
    code = _trim(code)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise VerifierError(f"verifier of task {idx} does not parse: {exc.msg} (line {exc.lineno})") from exc
    futures: list[str] = []
    lines = code.splitlines()
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            futures += [a.name for a in node.names]
            drop.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
    if drop:
        code = _trim("\n".join(line for i, line in enumerate(lines) if i not in drop))
        tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == AWM_VERIFIER]
    if not funcs:
        raise VerifierError(f"verifier of task {idx} defines no top-level {AWM_VERIFIER}()")
    bindings: dict[str, str] = {}
    for stmt in tree.body:
        for name in _bound_names(stmt):
            if name != AWM_VERIFIER:
                bindings[name] = bindings.get(name, "") + ast.dump(stmt)
    return _VerifierCode(idx, code, tree, funcs[-1], futures, bindings)


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the module namespace (not inside nested functions/classes)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    names: set[str] = set()
    todo: list[ast.AST] = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif node is not stmt and isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom
        ):
            names |= _bound_names(node)  # type: ignore[arg-type]
            continue
        todo.extend(ast.iter_child_nodes(node))
    return names


def _uses_final_answer(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the verifier reads its final_answer argument (i.e. it checks a query task's answer)."""
    return any(isinstance(n, ast.Name) and n.id == "final_answer" for stmt in func.body for n in ast.walk(stmt))


def _accepts_final_answer(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    a = func.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    return "final_answer" in names or len(a.posonlyargs + a.args) >= 3 or a.vararg is not None


def _string_lines(code: str) -> set[int]:
    """1-based line numbers that begin inside a multi-line string (their indentation is data, not syntax)."""
    inside: set[int] = set()
    fstart = getattr(tokenize, "FSTRING_START", None)
    fend = getattr(tokenize, "FSTRING_END", None)
    open_f: list[int] = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == fstart:
            open_f.append(tok.start[0])
        elif tok.type == fend and open_f:
            start = open_f.pop()
            if not open_f:
                inside.update(range(start + 1, tok.end[0] + 1))
        elif tok.type == tokenize.STRING and tok.end[0] > tok.start[0] and not open_f:
            inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    return inside


def indent_code(code: str, prefix: str = NEST_INDENT) -> str:
    skip = _string_lines(code)
    return "\n".join(
        line if (i in skip or not line.strip()) else prefix + line for i, line in enumerate(code.splitlines(), 1)
    )


def dedent_code(code: str, prefix: str = NEST_INDENT) -> str:
    skip = _string_lines(code)
    return "\n".join(
        line[len(prefix) :] if (i not in skip and line.startswith(prefix)) else line
        for i, line in enumerate(code.splitlines(), 1)
    )


_DEF_RE = r"^(\s*(?:async\s+)?def\s+){name}(\s*\()"


def _renamed(v: _VerifierCode, new_name: str) -> str:
    lines = v.code.splitlines()
    ln = v.func.lineno - 1
    lines[ln], n = re.subn(_DEF_RE.format(name=AWM_VERIFIER), rf"\g<1>{new_name}\g<2>", lines[ln], count=1)
    if n != 1:
        raise VerifierError(f"verifier of task {v.idx}: cannot find the `def {AWM_VERIFIER}(` line")
    return "\n".join(lines).rstrip()


def _nested(v: _VerifierCode, new_name: str) -> str:
    call_args = (
        "initial_db_path, final_db_path, final_answer"
        if _accepts_final_answer(v.func)
        else ("initial_db_path, final_db_path")
    )
    return (
        f"def {new_name}(initial_db_path: str, final_db_path: str, final_answer: str | None = None) -> dict:\n"
        f"{indent_code(v.code.rstrip())}\n"
        f"{NEST_INDENT}return {AWM_VERIFIER}({call_args})"
    )


def build_verifiers(codes: dict[int, str]) -> tuple[str, dict[int, bool]]:
    """Assemble verifiers.py from each task's AWM code; returns the source and, per task, whether it reads final_answer.

    A task's code is renamed in place (`def verify_task_completion(` -> `def verify_task_<idx>(`) unless one of
    its top-level names is also bound differently by another task or is one of the generated `verify_task_<k>`
    names (or it refers to its own function by name): then its code is nested inside `verify_task_<idx>` so its
    helpers stay private.
    """
    parsed = {idx: _parse_verifier(idx, code) for idx, code in sorted(codes.items())}
    owners: dict[str, set[str]] = {}
    for v in parsed.values():
        for name, dump in v.bindings.items():
            owners.setdefault(name, set()).add(dump)
    futures = sorted({f for v in parsed.values() for f in v.futures})
    generated = {f"verify_task_{idx}" for idx in parsed}  # a task binding one of these would be shadowed
    header = ['"""Verifiers imported from AWM (gen_verifier.pure_code.jsonl); one section per task."""', ""]
    if futures:
        header += [f"from __future__ import {', '.join(futures)}", ""]
    sections: list[str] = []
    for idx, v in parsed.items():
        name = f"verify_task_{idx}"
        refers_self = (
            sum(1 for n in ast.walk(v.tree) if isinstance(n, ast.Name) and n.id == AWM_VERIFIER) > 0
            or len([n for n in v.tree.body if getattr(n, "name", None) == AWM_VERIFIER]) > 1
        )
        collides = any(len(owners[n]) > 1 or n in generated for n in v.bindings)
        mode = "nested" if (collides or refers_self) else "renamed"
        body = _nested(v, name) if mode == "nested" else _renamed(v, name)
        future = f", future {','.join(v.futures)}" if v.futures else ""
        sections.append(f"# === AWM verifier {name} (task_idx {idx}, {mode}{future}) ===\n{body}\n")
    source = "\n".join(header) + "\n" + "\n\n".join(sections)
    try:
        compile(source, "verifiers.py", "exec")
    except SyntaxError as exc:
        raise VerifierError(f"assembled verifiers.py does not compile: {exc.msg} (line {exc.lineno})") from exc
    return source, {idx: _uses_final_answer(v.func) for idx, v in parsed.items()}


# --------------------------------------------------------------------------------------------------------------
# Scenario -> bundle.


@dataclass
class _Inputs:
    scenarios: dict[str, ScenarioRec]
    tasks: dict[str, TasksRec]
    dbs: dict[str, DbRec]
    samples: dict[str, SampleRec]
    specs: dict[str, SpecRec]
    envs: dict[str, EnvsRec]
    verifiers: dict[str, dict[int, VerifierRec]]
    solutions: dict[str | None, dict[int, SolutionRec]]  # None: records without a scenario field

    def names(self) -> list[str]:
        keys: set[str] = set()
        for d in (self.scenarios, self.tasks, self.dbs, self.samples, self.envs, self.verifiers):
            keys |= set(d)
        return sorted(keys)


def _read_inputs(from_dir: Path) -> _Inputs:
    verifiers: dict[str, dict[int, VerifierRec]] = {}
    if (from_dir / F_VERIFIER).is_file():
        for _, rec in read_jsonl(from_dir / F_VERIFIER, VerifierRec):
            verifiers.setdefault(normalise_name(rec.scenario), {})[rec.task_idx] = rec
    solutions: dict[str | None, dict[int, SolutionRec]] = {}
    if (from_dir / F_SOLUTIONS).is_file():
        for _, rec in read_jsonl(from_dir / F_SOLUTIONS, SolutionRec):
            key = normalise_name(rec.scenario) if rec.scenario else None
            solutions.setdefault(key, {})[rec.task_idx] = rec
    return _Inputs(
        scenarios=_by_scenario(from_dir / F_SCENARIO, ScenarioRec, key="name"),
        tasks=_by_scenario(from_dir / F_TASKS, TasksRec),
        dbs=_by_scenario(from_dir / F_DB, DbRec),
        samples=_by_scenario(from_dir / F_SAMPLE, SampleRec),
        specs=_by_scenario(from_dir / F_SPEC, SpecRec),
        envs=_by_scenario(from_dir / F_ENVS, EnvsRec),
        verifiers=verifiers,
        solutions=solutions,
    )


def _missing(inputs: _Inputs, name: str) -> list[str]:
    have = {
        F_TASKS: name in inputs.tasks,
        F_DB: name in inputs.dbs,
        F_SAMPLE: name in inputs.samples,
        F_ENVS: name in inputs.envs,
        F_VERIFIER: name in inputs.verifiers,
    }
    return [f for f in REQUIRED_FILES if not have[f]]


def seed_problems(schema: str, seed: str) -> list[str]:
    """Build the database in memory and report what makes it unusable or non-deterministic.

    Wall-clock reads left after pinning come from the schema (e.g. a column's DEFAULT CURRENT_TIMESTAMP filled
    by an insert that omits the column); SQLite's clock functions are overridden on this connection to count them,
    delegating the real work to a plain connection.
    """
    reads: list[str] = []
    plain = sqlite3.connect(":memory:")
    conn = sqlite3.connect(":memory:")

    def spy(name: str, time_arg: int | None):
        def fn(*args: Any) -> Any:
            if time_arg is None:
                reads.append(name)
                args = (FIXED_INSTANT,)
                name_ = {"current_timestamp": "datetime", "current_date": "date", "current_time": "time"}[name]
                return plain.execute(f"SELECT {name_}(?)", args).fetchone()[0]
            if len(args) <= time_arg or (isinstance(args[time_arg], str) and args[time_arg].lower() == "now"):
                reads.append(name)
            marks = ", ".join("?" * len(args))
            return plain.execute(f"SELECT {name}({marks})", args).fetchone()[0]

        return fn

    for name, positions in _TIME_ARG_POSITIONS.items():
        if name != "timediff":
            conn.create_function(name, -1, spy(name, positions[0]), deterministic=True)
    for name in _KEYWORD_PINS:
        conn.create_function(name, 0, spy(name, None))
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(schema)
        conn.executescript(seed)
        bad_fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.Error as exc:
        return [f"schema.sql + seed.sql do not execute: {exc}"]
    finally:
        conn.close()
        plain.close()
    problems = []
    if bad_fk:
        problems.append(f"{len(bad_fk)} rows violate foreign keys")
    if reads:
        problems.append(
            f"seed still reads the clock {len(reads)} time(s) after pinning ({', '.join(sorted(set(reads)))};"
            " e.g. a column DEFAULT CURRENT_TIMESTAMP): the initial state depends on when it is built"
        )
    return problems


def schema_sql(db: DbRec) -> str:
    parts = []
    for table in db.db_schema.tables:
        stmts = [stmt for s in [table.ddl, *table.indexes] for stmt in split_sql(s)]
        parts.append(f"-- table: {table.name}\n" + "\n".join(stmts))
    return "\n\n".join(parts) + "\n"


def seed_sql(sample: SampleRec) -> str:
    parts = []
    for table in sample.tables:
        # One statement per entry after splitting, so an entry holding two statements round-trips through export.
        stmts = [stmt for s in table.insert_statements for stmt in split_sql(pin_wall_clock(s))]
        parts.append(f"-- table: {table.table_name}\n" + "\n".join(stmts))
    return "\n\n".join(parts) + "\n"


def _scenario_bundle(inputs: _Inputs, name: str, solutions: dict[int, SolutionRec], result: ImportResult) -> Bundle:
    tasks_rec, db, sample, envs = inputs.tasks[name], inputs.dbs[name], inputs.samples[name], inputs.envs[name]
    verifier_recs = inputs.verifiers[name]
    n_tasks = len(tasks_rec.tasks)
    missing = [i for i in range(n_tasks) if i not in verifier_recs]
    if missing:
        raise VerifierError(f"no verifier for task(s) {', '.join(map(str, missing))} in {F_VERIFIER}")
    extra = sorted(i for i in verifier_recs if not 0 <= i < n_tasks)
    if extra:
        result.warnings.append(f"{name}: ignoring verifiers for task_idx {extra} (only {n_tasks} tasks)")
    verifiers_py, reads_answer = build_verifiers({i: verifier_recs[i].verification.code for i in range(n_tasks)})

    tasks: list[Task] = []
    for i, instruction in enumerate(tasks_rec.tasks):
        sol = solutions.get(i)
        if sol is not None:
            answer = sol.final_answer if sol.final_answer and sol.final_answer.strip() else None
            kind = "query" if answer is not None else "mutation"
            calls = [ToolCall(tool=c.tool, arguments=c.arguments) for c in sol.calls]
        else:
            answer, calls = None, []
            kind = "query" if reads_answer[i] else "mutation"
        tasks.append(
            Task(
                id=f"task_{i}",
                instruction=instruction,
                kind=kind,
                verifier=f"verify_task_{i}",
                solution=calls,
                expected_answer=answer,
            )
        )

    op_ids = app_operation_ids(envs.full_code)
    if op_ids is None:
        spec = inputs.specs.get(name)
        tools = spec_endpoint_count(spec) if spec else 0
        result.warnings.append(
            f"{name}: app code does not parse; tool count taken from {F_SPEC if spec else 'nowhere'}"
        )
    else:
        tools = len(op_ids)
    schema, seed = schema_sql(db), seed_sql(sample)
    result.warnings += [f"{name}: {p}" for p in seed_problems(schema, seed)]
    scen = inputs.scenarios.get(name)
    manifest = EnvManifest(
        id=name,
        title=app_title(envs.full_code) or name,
        description=scen.description if scen else "",
        provenance={"source": "awm-import", "scenario": name},
        counts=Counts(tables=len(db.db_schema.tables), tools=tools, tasks=n_tasks),
    )
    return Bundle(
        manifest=manifest,
        schema_sql=schema,
        seed_sql=seed,
        app_py=envs.full_code,
        tasks=tasks,
        verifiers_py=verifiers_py,
    )


def _import_one(inputs: _Inputs, name: str, out_dir: Path, result: ImportResult, single: bool) -> None:
    missing = _missing(inputs, name)
    if missing:
        result.skipped.append(SkippedScenario(name, f"missing from {', '.join(missing)}"))
        return
    # solutions.jsonl records name no scenario in mini_library: they apply when the input holds one scenario.
    sols = inputs.solutions.get(name) or (inputs.solutions.get(None, {}) if single else {})
    try:
        bundle = _scenario_bundle(inputs, name, sols, result)
    except VerifierError as exc:
        result.skipped.append(SkippedScenario(name, str(exc)))
        return
    result.append(write_bundle(bundle, out_dir))
    result.bundles.append(bundle)


def import_awm(
    from_dir: Path,
    out_dir: Path,
    scenarios: list[str] | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
    on_scenario: Callable[[str], None] | None = None,
) -> ImportResult:
    """Convert the AWM JSONL files in `from_dir` into bundles under `out_dir`; returns the bundle directories.

    The result is a list of paths that also carries `.skipped` (scenarios missing a required file or with
    unusable verifiers, each with the reason) and `.warnings`. Malformed lines raise AwmFormatError.
    `on_start(n)` and `on_scenario(name)` (after each scenario) let a caller show progress.
    """
    from_dir, out_dir = Path(from_dir), Path(out_dir)
    if not from_dir.is_dir():
        raise AwmFormatError(f"{from_dir}: not a directory")
    inputs = _read_inputs(from_dir)
    names = inputs.names()
    if not names:
        raise AwmFormatError(f"{from_dir}: no AWM scenarios found (expected {', '.join(REQUIRED_FILES)})")
    result = ImportResult()
    wanted = names
    if scenarios is not None:
        wanted = []
        for s in scenarios:
            n = normalise_name(s)
            if n in names:
                wanted.append(n)
            else:
                result.skipped.append(SkippedScenario(n, "not found in the input files"))
    scenario_keys = [k for k in inputs.solutions if k is not None]
    unknown = sorted(set(scenario_keys) - set(names))
    if unknown:
        result.warnings.append(f"{F_SOLUTIONS}: records for unknown scenario(s) {', '.join(unknown)} ignored")
    if None in inputs.solutions and len(names) > 1:
        result.warnings.append(
            f"{F_SOLUTIONS}: records without a 'scenario' field are ambiguous with {len(names)} scenarios; ignored"
        )
    if on_start is not None:
        on_start(len(wanted))
    for name in wanted:
        _import_one(inputs, name, out_dir, result, single=len(names) == 1)
        if on_scenario is not None:
            on_scenario(name)
    for s in result.skipped:
        log.warning("skipped AWM scenario %s: %s", s.scenario, s.reason)
    for w in result.warnings:
        log.warning("%s", w)
    return result
