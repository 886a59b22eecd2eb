"""Scripted model answers for the pipeline tests: two complete environments, one per stage and task.

`library_lending_1` is AWM's mini_library (its real gen_*.jsonl records, as a model would have produced them);
`team_todos` is a small hand-written environment in the same style.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.llm.fake_servers import Recorded, Reply

AWM = Path(__file__).resolve().parents[2] / ".." / "shared" / "awm"
MINI = AWM / "mini_library"
SEED_PATH = AWM / "seed_scenario.jsonl"

Answers = dict[tuple[str, str | None, int | None], list[str]]


def _first(name: str) -> dict[str, Any]:
    return json.loads((MINI / name).read_text().splitlines()[0])


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (MINI / name).read_text().splitlines() if x.strip()]


def fenced(code: str) -> str:
    return f"Here is the server.\n\n```python\n{code}```\n"


LIBRARY_DESCRIPTION = _first("gen_scenario.jsonl")["description"]


def library_answers() -> Answers:
    sid = "library_lending_1"
    db, sample, spec, envs = _first("gen_db.jsonl"), _first("gen_sample.jsonl"), _first("gen_spec.jsonl"), _first(
        "gen_envs.jsonl")
    out: Answers = {
        ("tasks", sid, None): [json.dumps({"tasks": _first("gen_tasks.jsonl")["tasks"]})],
        ("schema", sid, None): [json.dumps(db["db_schema"])],
        ("seed", sid, None): [json.dumps(sample["sample_data"])],
        ("spec", sid, None): [json.dumps(spec["api_spec"])],
        ("code", sid, None): [fenced(envs["full_code"])],
    }
    verifiers = {r["task_idx"]: r["verification"]["code"] for r in _lines("gen_verifier.pure_code.jsonl")}
    for sol in _lines("solutions.jsonl"):
        i = sol["task_idx"]
        answer = sol["final_answer"]
        out[("solutions", sid, i)] = [json.dumps({
            "kind": "query" if answer else "mutation", "solution": sol["calls"], "expected_answer": answer,
            "verifier_code": verifiers[i]})]
    return out


# ---- team_todos ---------------------------------------------------------------------------------------------

TODO_DESCRIPTION = (
    "A small team to-do tracker. Team members organise work into projects, add to-do items with a due date and a "
    "priority, mark items done or reopen them, rename projects and delete items that are no longer needed.")

TODO_TABLES = [
    {"name": "users", "ddl": "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
     "email TEXT NOT NULL UNIQUE)", "indexes": []},
    {"name": "projects", "ddl": "CREATE TABLE projects (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL "
     "UNIQUE, owner_id INTEGER NOT NULL, FOREIGN KEY (owner_id) REFERENCES users(id))", "indexes": []},
    {"name": "todos", "ddl": "CREATE TABLE todos (id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER NOT NULL, "
     "title TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')), priority TEXT NOT "
     "NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high')), due_date TEXT, assignee_id INTEGER, "
     "FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE, FOREIGN KEY (assignee_id) REFERENCES "
     "users(id))", "indexes": ["CREATE INDEX idx_todos_project ON todos(project_id)"]},
]
TODO_SCHEMA_BROKEN = [dict(TODO_TABLES[0]), dict(TODO_TABLES[1]), {
    "name": "todos", "ddl": "CREATE TABLEE todos (id INTEGER PRIMARY KEY, title TEXT)", "indexes": []}]

TODO_SEED = [
    {"table_name": "users", "reasoning": "the logged-in user and a colleague",
     "insert_statements": ["INSERT INTO users (id, name, email) VALUES (1, 'Ana Ruiz', 'ana@example.com')",
                           "INSERT INTO users (id, name, email) VALUES (2, 'Ben Okafor', 'ben@example.com')"]},
    {"table_name": "projects", "reasoning": "three projects with different sizes",
     "insert_statements": ["INSERT INTO projects (id, name, owner_id) VALUES (1, 'Website', 1)",
                           "INSERT INTO projects (id, name, owner_id) VALUES (2, 'Offsite', 1)",
                           "INSERT INTO projects (id, name, owner_id) VALUES (3, 'Finance', 2)"]},
    {"table_name": "todos", "reasoning": "open and done items, one overdue",
     "insert_statements": [
         "INSERT INTO todos (id, project_id, title, status, priority, due_date, assignee_id) VALUES "
         "(1, 1, 'Fix login bug', 'done', 'high', '2025-05-20', 1)",
         "INSERT INTO todos (id, project_id, title, status, priority, due_date, assignee_id) VALUES "
         "(2, 1, 'Write release notes', 'open', 'normal', '2025-06-10', 1)",
         "INSERT INTO todos (id, project_id, title, status, priority, due_date, assignee_id) VALUES "
         "(3, 1, 'Update footer links', 'open', 'low', '2025-06-30', 2)",
         "INSERT INTO todos (id, project_id, title, status, priority, due_date, assignee_id) VALUES "
         "(4, 2, 'Old draft agenda', 'open', 'low', NULL, 1)",
         "INSERT INTO todos (id, project_id, title, status, priority, due_date, assignee_id) VALUES "
         "(5, 3, 'Pay invoice', 'open', 'normal', '2025-05-28', 1)",
         "INSERT INTO todos (id, project_id, title, status, priority, due_date, assignee_id) VALUES "
         "(6, 1, 'Compress images', 'open', 'normal', '2025-06-12', 2)"]},
]


def _ep(group: str, path: str, method: str, op: str, summary: str, params: dict[str, Any]) -> tuple[str, dict]:
    return group, {"path": path, "method": method, "summary": summary, "description": summary + ".",
                   "operation_id": op, "tags": [group.lower()], "request_params": params,
                   "response": {"type": "object"}, "required_tables": ["todos"], "required_fields": {}}


def _p(type_: str, where: str, required: bool = False) -> dict[str, Any]:
    return {"type": type_, "param_type": where, "required": required, "description": "", "example": None}


_ENDPOINTS = [
    _ep("Projects", "/api/projects", "GET", "list_projects", "List projects with their to-do counts", {}),
    _ep("Projects", "/api/projects/{project_id}", "PATCH", "rename_project", "Rename a project",
        {"project_id": _p("integer", "path", True), "name": _p("string", "body", True)}),
    _ep("Todos", "/api/todos", "GET", "list_todos", "List to-do items, optionally filtered",
        {"project_id": _p("integer", "query"), "status": _p("string", "query"), "query": _p("string", "query")}),
    _ep("Todos", "/api/todos", "POST", "create_todo", "Create a to-do item in a project",
        {"project_id": _p("integer", "body", True), "title": _p("string", "body", True),
         "due_date": _p("string", "body"), "priority": _p("string", "body")}),
    _ep("Todos", "/api/todos/{todo_id}", "GET", "get_todo", "Get one to-do item",
        {"todo_id": _p("integer", "path", True)}),
    _ep("Todos", "/api/todos/{todo_id}", "PATCH", "update_todo", "Change status, priority, title or due date",
        {"todo_id": _p("integer", "path", True), "status": _p("string", "body"), "priority": _p("string", "body"),
         "title": _p("string", "body"), "due_date": _p("string", "body")}),
    _ep("Todos", "/api/todos/{todo_id}", "DELETE", "delete_todo", "Delete a to-do item",
        {"todo_id": _p("integer", "path", True)}),
]


def todo_spec() -> dict[str, Any]:
    groups: dict[str, list[dict]] = {}
    for group, ep in _ENDPOINTS:
        groups.setdefault(group, []).append(ep)
    return {"api_groups": [{"group_name": g, "endpoints": eps} for g, eps in groups.items()]}


TODO_APP = '''import os
from typing import List, Optional
from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, Column, Integer, Text, ForeignKey, func
from sqlalchemy.orm import declarative_base, sessionmaker

DATABASE_PATH = os.getenv("DATABASE_PATH") or "sqlite:///team_todos.db"
engine = create_engine(DATABASE_PATH, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
Base = declarative_base()
CURRENT_USER_ID = 1


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(Text, nullable=False)
    email = Column(Text, nullable=False, unique=True)


class Project(Base):
    __tablename__ = "projects"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(Text, nullable=False, unique=True)
    owner_id = Column(Integer, ForeignKey("users.id"), nullable=False)


class Todo(Base):
    __tablename__ = "todos"
    id = Column(Integer, primary_key=True, autoincrement=True)
    project_id = Column(Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    title = Column(Text, nullable=False)
    status = Column(Text, nullable=False, server_default="open")
    priority = Column(Text, nullable=False, server_default="normal")
    due_date = Column(Text)
    assignee_id = Column(Integer, ForeignKey("users.id"))


Base.metadata.create_all(engine)


class ProjectOut(BaseModel):
    id: int = Field(..., description="Project identifier")
    name: str = Field(..., description="Project name")
    todo_count: int = Field(..., description="Number of to-do items in the project")
    open_count: int = Field(..., description="Number of open to-do items")


class TodoOut(BaseModel):
    id: int = Field(..., description="To-do identifier")
    project_id: int = Field(..., description="Project the item belongs to")
    title: str = Field(..., description="Title")
    status: str = Field(..., description="open or done")
    priority: str = Field(..., description="low, normal or high")
    due_date: Optional[str] = Field(None, description="Due date YYYY-MM-DD")


class RenameIn(BaseModel):
    name: str = Field(..., description="New project name")


class TodoIn(BaseModel):
    project_id: int = Field(..., description="Project to add the item to")
    title: str = Field(..., description="Title")
    due_date: Optional[str] = Field(None, description="Due date YYYY-MM-DD")
    priority: str = Field("normal", description="low, normal or high")


class TodoPatch(BaseModel):
    status: Optional[str] = Field(None, description="open or done")
    priority: Optional[str] = Field(None, description="low, normal or high")
    title: Optional[str] = Field(None, description="New title")
    due_date: Optional[str] = Field(None, description="New due date YYYY-MM-DD")


app = FastAPI(title="Team Todos API", description="Projects and to-do items of a small team.")


def todo_out(t):
    return TodoOut(id=t.id, project_id=t.project_id, title=t.title, status=t.status, priority=t.priority,
                   due_date=t.due_date)


@app.get("/api/projects", response_model=List[ProjectOut], operation_id="list_projects",
         summary="List projects with their to-do counts", description="Every project with item counts.")
async def list_projects():
    session = SessionLocal()
    out = []
    for p in session.query(Project).order_by(Project.id).all():
        total = session.query(func.count(Todo.id)).filter(Todo.project_id == p.id).scalar()
        opened = session.query(func.count(Todo.id)).filter(Todo.project_id == p.id, Todo.status == "open").scalar()
        out.append(ProjectOut(id=p.id, name=p.name, todo_count=total, open_count=opened))
    session.close()
    return out


@app.patch("/api/projects/{project_id}", response_model=ProjectOut, operation_id="rename_project",
           summary="Rename a project", description="Give a project a new unique name.")
async def rename_project(payload: RenameIn, project_id: int = Path(..., description="Project identifier")):
    session = SessionLocal()
    p = session.query(Project).filter(Project.id == project_id).first()
    if p is None:
        session.close()
        raise HTTPException(status_code=404, detail=f"project {project_id} not found")
    p.name = payload.name
    session.commit()
    total = session.query(func.count(Todo.id)).filter(Todo.project_id == p.id).scalar()
    opened = session.query(func.count(Todo.id)).filter(Todo.project_id == p.id, Todo.status == "open").scalar()
    out = ProjectOut(id=p.id, name=p.name, todo_count=total, open_count=opened)
    session.close()
    return out


@app.get("/api/todos", response_model=List[TodoOut], operation_id="list_todos",
         summary="List to-do items, optionally filtered", description="Filter by project, status or title text.")
async def list_todos(project_id: Optional[int] = Query(None, description="Project identifier"),
                     status: Optional[str] = Query(None, description="open or done"),
                     query: Optional[str] = Query(None, description="Text contained in the title")):
    session = SessionLocal()
    q = session.query(Todo)
    if project_id is not None:
        q = q.filter(Todo.project_id == project_id)
    if status:
        q = q.filter(Todo.status == status)
    if query:
        q = q.filter(Todo.title.ilike(f"%{query}%"))
    out = [todo_out(t) for t in q.order_by(Todo.id).all()]
    session.close()
    return out


@app.post("/api/todos", response_model=TodoOut, operation_id="create_todo",
          summary="Create a to-do item in a project", description="Adds an open item.")
async def create_todo(payload: TodoIn):
    session = SessionLocal()
    if session.query(Project).filter(Project.id == payload.project_id).first() is None:
        session.close()
        raise HTTPException(status_code=404, detail=f"project {payload.project_id} not found")
    t = Todo(project_id=payload.project_id, title=payload.title, due_date=payload.due_date,
             priority=payload.priority, status="open", assignee_id=CURRENT_USER_ID)
    session.add(t)
    session.commit()
    out = todo_out(t)
    session.close()
    return out


@app.get("/api/todos/{todo_id}", response_model=TodoOut, operation_id="get_todo",
         summary="Get one to-do item", description="One item by id.")
async def get_todo(todo_id: int = Path(..., description="To-do identifier")):
    session = SessionLocal()
    t = session.query(Todo).filter(Todo.id == todo_id).first()
    session.close()
    if t is None:
        raise HTTPException(status_code=404, detail=f"to-do {todo_id} not found")
    return todo_out(t)


@app.patch("/api/todos/{todo_id}", response_model=TodoOut, operation_id="update_todo",
           summary="Change status, priority, title or due date", description="Partial update of an item.")
async def update_todo(payload: TodoPatch, todo_id: int = Path(..., description="To-do identifier")):
    session = SessionLocal()
    t = session.query(Todo).filter(Todo.id == todo_id).first()
    if t is None:
        session.close()
        raise HTTPException(status_code=404, detail=f"to-do {todo_id} not found")
    for key, value in payload.model_dump(exclude_none=True).items():
        setattr(t, key, value)
    session.commit()
    out = todo_out(t)
    session.close()
    return out


@app.delete("/api/todos/{todo_id}", response_model=TodoOut, operation_id="delete_todo",
            summary="Delete a to-do item", description="Removes an item for good.")
async def delete_todo(todo_id: int = Path(..., description="To-do identifier")):
    session = SessionLocal()
    t = session.query(Todo).filter(Todo.id == todo_id).first()
    if t is None:
        session.close()
        raise HTTPException(status_code=404, detail=f"to-do {todo_id} not found")
    out = todo_out(t)
    session.delete(t)
    session.commit()
    session.close()
    return out


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))
'''

_ROWS = '''    import sqlite3

    def rows(path, sql, params=()):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
'''


def _verifier(body: str) -> str:
    return ("def verify_task_completion(initial_db_path: str, final_db_path: str, final_answer: str | None = None)"
            " -> dict:\n" + _ROWS + body)


def _field_changed(todo_id: int, column: str, value: str) -> str:
    return _verifier(
        f"    before = rows(initial_db_path, 'SELECT {column} FROM todos WHERE id = ?', ({todo_id},))\n"
        f"    after = rows(final_db_path, 'SELECT {column} FROM todos WHERE id = ?', ({todo_id},))\n"
        f"    ok = bool(after) and after[0][0] == {value!r} and before[0][0] != {value!r}\n"
        "    return {'result': 'complete' if ok else 'others'}\n")


def _answer_contains(*needles: str) -> str:
    return _verifier(
        "    text = (final_answer or '').lower()\n"
        f"    ok = all(n in text for n in {[n.lower() for n in needles]!r})\n"
        "    return {'result': 'complete' if ok else 'others'}\n")


TODO_TASKS: list[tuple[str, dict[str, Any]]] = [
    ("How many open to-do items does the Website project have?",
     {"kind": "query", "solution": [{"tool": "list_projects", "arguments": {}}],
      "expected_answer": "The Website project has 3 open to-do items.", "verifier_code": _answer_contains("3 open")}),
    ("Mark 'Write release notes' as done.",
     {"kind": "mutation", "solution": [{"tool": "list_todos", "arguments": {"query": "release notes"}},
                                       {"tool": "update_todo", "arguments": {"todo_id": 2, "status": "done"}}],
      "expected_answer": None, "verifier_code": _field_changed(2, "status", "done")}),
    ("Add a to-do 'Book venue' to the Offsite project, due 2025-06-20.",
     {"kind": "mutation", "solution": [{"tool": "list_projects", "arguments": {}}, {
         "tool": "create_todo", "arguments": {"project_id": 2, "title": "Book venue", "due_date": "2025-06-20"}}],
      "expected_answer": None, "verifier_code": _verifier(
          "    q = \"SELECT COUNT(*) FROM todos WHERE title = 'Book venue' AND project_id = 2 AND due_date = "
          "'2025-06-20'\"\n"
          "    ok = rows(initial_db_path, q)[0][0] == 0 and rows(final_db_path, q)[0][0] == 1\n"
          "    return {'result': 'complete' if ok else 'others'}\n")}),
    ("Delete the to-do 'Old draft agenda'.",
     {"kind": "mutation", "solution": [{"tool": "list_todos", "arguments": {"query": "Old draft"}},
                                       {"tool": "delete_todo", "arguments": {"todo_id": 4}}],
      "expected_answer": None, "verifier_code": _verifier(
          "    q = 'SELECT COUNT(*) FROM todos WHERE id = 4'\n"
          "    ok = rows(initial_db_path, q)[0][0] == 1 and rows(final_db_path, q)[0][0] == 0\n"
          "    return {'result': 'complete' if ok else 'others'}\n")}),
    ("When is 'Pay invoice' due?",
     {"kind": "query", "solution": [{"tool": "list_todos", "arguments": {"query": "Pay invoice"}}],
      "expected_answer": "'Pay invoice' is due on 2025-05-28.", "verifier_code": _answer_contains("2025-05-28")}),
    ("Rename the Offsite project to 'Team Offsite'.",
     {"kind": "mutation", "solution": [{"tool": "list_projects", "arguments": {}},
                                       {"tool": "rename_project", "arguments": {"project_id": 2,
                                                                                "name": "Team Offsite"}}],
      "expected_answer": None, "verifier_code": _verifier(
          "    ok = rows(final_db_path, 'SELECT name FROM projects WHERE id = 2') == [('Team Offsite',)]\n"
          "    ok = ok and rows(initial_db_path, 'SELECT name FROM projects WHERE id = 2') == [('Offsite',)]\n"
          "    return {'result': 'complete' if ok else 'others'}\n")}),
    ("Which project has the most to-do items?",
     {"kind": "query", "solution": [{"tool": "list_projects", "arguments": {}}],
      "expected_answer": "Website has the most to-do items (4).", "verifier_code": _answer_contains("website")}),
    ("Reopen the to-do 'Fix login bug'.",
     {"kind": "mutation", "solution": [{"tool": "list_todos", "arguments": {"query": "login"}},
                                       {"tool": "update_todo", "arguments": {"todo_id": 1, "status": "open"}}],
      "expected_answer": None, "verifier_code": _field_changed(1, "status", "open")}),
    ("Set the priority of 'Pay invoice' to high.",
     {"kind": "mutation", "solution": [{"tool": "list_todos", "arguments": {"query": "Pay invoice"}},
                                       {"tool": "update_todo", "arguments": {"todo_id": 5, "priority": "high"}}],
      "expected_answer": None, "verifier_code": _field_changed(5, "priority", "high")}),
    ("Which of my open to-do items are overdue? Today is 2025-06-01.",
     {"kind": "query", "solution": [{"tool": "list_todos", "arguments": {"status": "open"}}],
      "expected_answer": "Only 'Pay invoice' (due 2025-05-28) is overdue.",
      "verifier_code": _answer_contains("pay invoice")}),
]


def todo_answers(sid: str = "team_todos") -> Answers:
    out: Answers = {
        ("tasks", sid, None): [json.dumps({"tasks": [t for t, _ in TODO_TASKS]})],
        ("schema", sid, None): [json.dumps({"tables": TODO_TABLES})],
        ("seed", sid, None): [json.dumps({"tables": TODO_SEED})],
        ("spec", sid, None): [json.dumps(todo_spec())],
        ("code", sid, None): [fenced(TODO_APP)],
    }
    for i, (_, sol) in enumerate(TODO_TASKS):
        out[("solutions", sid, i)] = [json.dumps(sol)]
    return out


def scenarios_answer(*scenarios: tuple[str, str]) -> str:
    return json.dumps({"scenarios": [{"name": n, "description": d} for n, d in scenarios]})


class ScriptedModel:
    """Answers by (stage, scenario, task index) and attempt number; `calls` counts what was asked."""

    def __init__(self, answers: Answers, on_request: Callable[[Recorded], None] | None = None) -> None:
        self.answers = answers
        self.on_request = on_request

    def __call__(self, req: Recorded) -> Reply:
        if self.on_request:
            self.on_request(req)
        stage = req.stage or ""
        key = (stage, None if stage == "scenarios" else req.scenario, req.task_index)
        options = self.answers.get(key)
        if options is None:
            return Reply(status=400, text=f"no scripted answer for {key}", error_type="invalid_request_error")
        answer = options[min(req.attempt, len(options)) - 1]
        if answer.startswith("TRUNCATED:"):
            return Reply(text=answer.removeprefix("TRUNCATED:"), finish="length")
        return Reply(text=answer)
