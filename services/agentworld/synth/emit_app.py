"""app.py emission: a FastAPI + SQLAlchemy tool server in AWM's style, one route per tool.

Validation a real service would do happens before any write (404 unknown ids, 409 state conflicts and
duplicates, 400 business rules, 422 bad fields via pydantic), so a failing call changes nothing.
"""

from __future__ import annotations

from agentworld.synth.compose import Column, Scenario, Table, camel
from agentworld.synth.data import NOW
from agentworld.synth.tools import CLOSED_STATES, ToolDef, is_book_child, tool_defs, updatable

_SA_TYPE = {"TEXT": "Text", "INTEGER": "Integer", "REAL": "Float"}
_TEXTY = ("person", "company", "email", "city", "words", "word", "code", "job", "plate", "country")


def _q(s: str) -> str:
    return repr(s)


def _lit_alias(t: Table, c: Column) -> str:
    return f"{t.cls}{camel(c.name)}"


def _py(t: Table, c: Column) -> str:
    if c.kind in ("enum", "status"):
        return _lit_alias(t, c)
    return {"str": "str", "int": "int", "float": "float", "bool": "bool"}[c.py_type]


def _constraints(c: Column) -> str:
    if c.kind == "fk":
        return ", ge=1"
    if c.kind in ("money", "int", "float") and c.args and float(c.args[0]) >= 0:
        return ", ge=0"
    if c.kind == "email":
        return r', pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"'
    if c.kind == "date":
        return r', pattern=r"^\d{4}-\d{2}-\d{2}$"'
    if c.kind == "time":
        return r', pattern=r"^\d{2}:\d{2}$"'
    if c.py_type == "str" and c.kind not in ("enum", "status"):
        return ", min_length=1, max_length=300"
    return ""


def _desc(t: Table, c: Column) -> str:
    if c.kind == "fk":
        target = c.fk_table or ""
        return f"id of the {c.name[:-3].replace('_', ' ')} ({target.replace('_', ' ')} row)"
    if c.kind == "date":
        return f"{c.name.replace('_', ' ')} (YYYY-MM-DD)"
    if c.kind in ("enum", "status"):
        return f"{c.name.replace('_', ' ')}: one of {', '.join(c.args)}"
    return f"{c.name.replace('_', ' ')} of the {t.sing_words}"


def _models(scenario: Scenario) -> list[str]:
    out: list[str] = []
    for t in scenario.tables:
        out.append(f"class {t.cls}(Base):")
        out.append(f'    __tablename__ = "{t.name}"')
        out.append("    id = Column(Integer, primary_key=True)")
        for c in t.columns:
            args = [_SA_TYPE[c.sql_type] if c.py_type != "bool" else "Boolean"]
            if c.kind == "fk":
                args.append(f'ForeignKey("{c.fk_table}.id")')
            args.append(f"nullable={c.nullable}")
            if c.unique:
                args.append("unique=True")
            if c.kind == "status":
                args.append(f'server_default="{c.args[0]}"')
            out.append(f"    {c.name} = Column({', '.join(args)})")
        out.append("    created_at = Column(Text, nullable=False)")
        out.append("    updated_at = Column(Text, nullable=False)")
        out.append("")
        out.append("")
    return out


def _schemas(scenario: Scenario) -> list[str]:
    out: list[str] = []
    for t in scenario.tables:
        for c in t.columns:
            if c.kind in ("enum", "status"):
                out.append(f"{_lit_alias(t, c)} = Literal[{', '.join(_q(a) for a in c.args)}]")
    out += ["", ""]
    for t in scenario.tables:
        out.append(f"class {t.cls}Out(BaseModel):")
        out.append("    model_config = ConfigDict(from_attributes=True, defer_build=True)")
        out.append(f'    id: int = Field(..., description="{t.sing_words} id")')
        for c in t.columns:
            typ = _py(t, c)
            typ = f"Optional[{typ}]" if c.nullable else typ
            out.append(f"    {c.name}: {typ} = Field({'None' if c.nullable else '...'}, description={_q(_desc(t, c))})")
        out.append('    created_at: str = Field(..., description="when the row was created")')
        out.append('    updated_at: str = Field(..., description="when the row last changed")')
        out += ["", ""]
        if t.role == "lookup":
            continue
        if "create" in t.ops and not is_book_child(scenario, t):
            out.append(f"class {t.cls}Create(BaseModel):")
            out.append('    model_config = ConfigDict(extra="forbid")')
            for c in t.columns:
                if c.kind == "status":
                    continue
                typ = _py(t, c)
                if c.nullable:
                    out.append(f"    {c.name}: Optional[{typ}] = Field(None{_constraints(c)}, description={_q(_desc(t, c))})")
                else:
                    out.append(f"    {c.name}: {typ} = Field(...{_constraints(c)}, description={_q(_desc(t, c))})")
            out += ["", ""]
        if "update" in t.ops and updatable(t):
            out.append(f"class {t.cls}Update(BaseModel):")
            out.append('    model_config = ConfigDict(extra="forbid")')
            for c in updatable(t):
                out.append(f"    {c.name}: Optional[{_py(t, c)}] = Field(None{_constraints(c)}, description={_q(_desc(t, c))})")
            out += ["", ""]
        for a in t.adjusts:
            c = t.column(a.field)
            typ = "float" if c.py_type == "float" else "int"
            out.append(f"class {t.cls}{camel(a.verb)}Request(BaseModel):")
            out.append('    model_config = ConfigDict(extra="forbid")')
            out.append(f"    amount: {typ} = Field(..., gt=0, le=1000000, description={_q(f'how much to {a.verb.replace(chr(95), chr(32))} ({a.field.replace(chr(95), chr(32))})')})")
            out += ["", ""]
        for b in t.books:
            out.append(f"class {t.cls}{camel(b.verb)}Request(BaseModel):")
            out.append('    model_config = ConfigDict(extra="forbid")')
            out.append(f"    {b.person_col}: int = Field(..., ge=1, description={_q(f'id of the {b.person_table.replace(chr(95), chr(32))} row to book for')})")
            out += ["", ""]
        for tr in t.transfers:
            c = t.column(tr.field)
            typ = "float" if c.py_type == "float" else "int"
            out.append(f"class {t.cls}{camel(tr.verb)}Request(BaseModel):")
            out.append('    model_config = ConfigDict(extra="forbid")')
            out.append(f"    from_{t.singular}_id: int = Field(..., ge=1, description='id of the {t.sing_words} to take from')")
            out.append(f"    to_{t.singular}_id: int = Field(..., ge=1, description='id of the {t.sing_words} to credit')")
            out.append(f"    amount: {typ} = Field(..., gt=0, le=1000000, description='how much {tr.field.replace('_', ' ')} to move')")
            out += ["", ""]
    out.append("class DeleteResult(BaseModel):")
    out.append('    deleted: bool = Field(..., description="true when the row was removed")')
    out.append('    id: int = Field(..., description="id of the removed row")')
    out += ["", ""]
    return out


def _route(method: str, path: str, tool: str, summary: str, description: str, response: str, tag: str,
           status: int | None = None) -> str:
    # Routes return `response` models (e.g. OrderOut) but do not declare response_model: FastAPI would build a
    # validator per route and put every output schema in the OpenAPI document, which tool listing never reads
    # and which doubles the app's import cost (envd loads thousands of these).
    extra = f", status_code={status}" if status else ""
    shape = f"a JSON list of {response[5:-1]} objects" if response.startswith("List[") else f"a {response} object"
    return (f'@app.{method}("{path}", tags=["{tag}"], operation_id="{tool}", '
            f"summary={_q(summary)}, description={_q(f'{description} Returns {shape}.')}{extra})")


def _fk_checks(scenario: Scenario, cols: list[Column], source: str, indent: str) -> list[str]:
    out = []
    for c in cols:
        if c.kind != "fk":
            continue
        target = scenario.table(c.fk_table or "")
        out.append(f"{indent}if {source}.get({_q(c.name)}) is not None:")
        out.append(f"{indent}    get_or_404(session, {target.cls}, {source}[{_q(c.name)}], {_q(target.sing_words)})")
    return out


def _unique_check(t: Table, source: str, indent: str, exclude_id: str | None) -> list[str]:
    if not t.label:
        return []
    cond = f"{t.cls}.{t.label} == {source}[{_q(t.label)}]"
    if exclude_id:
        cond += f", {t.cls}.id != {exclude_id}"
    return [
        f"{indent}if {source}.get({_q(t.label)}) is not None and session.query({t.cls}).filter({cond}).first() is not None:",
        f"{indent}    raise HTTPException(status_code=409, detail=f\"a {t.sing_words} with {t.label.replace('_', ' ')} "
        f"{{{source}[{_q(t.label)}]!r}} already exists\")",
    ]


def _routes(scenario: Scenario, tools: list[ToolDef]) -> list[str]:
    out: list[str] = []
    tables = {t.name: t for t in scenario.tables}
    for d in tools:
        t = tables[d.table]
        pid = f"{t.singular}_id"
        base = f"/api/{t.name.replace('_', '-')}"
        item = f"{base}/{{{pid}}}"
        path_param = f'{pid}: int = Path(..., ge=1, description="id of the {t.sing_words}")'
        if d.op == "search":
            text_cols = [c for c in t.columns if c.kind in _TEXTY][:3]
            params = []
            desc = f"List {t.words} ordered by id"
            if t.label and text_cols:
                params.append(f'q: Optional[str] = Query(None, description="case-insensitive text matched against '
                              f'{", ".join(c.name for c in text_cols)}")')
                desc = (f"Search {t.words} by text (matches {', '.join(c.name.replace('_', ' ') for c in text_cols)}) "
                        f"and filters. Use it to find a {t.sing_words}'s id from its {t.label.replace('_', ' ')}")
            filters = [c for c in t.columns if c.kind in ("fk", "status")]
            filters += [c for c in t.columns if c.kind == "enum"][: max(0, 3 - len(filters))]
            for c in filters:
                params.append(f"{c.name}: Optional[{_py(t, c)}] = Query(None, description={_q('only rows with this ' + c.name.replace('_', ' '))})")
            params.append('limit: int = Query(100, ge=1, le=500, description="maximum number of rows to return")')
            out.append(_route("get", base, d.name, f"{'Search' if t.label else 'List'} {t.words}", desc + ".",
                              f"List[{t.cls}Out]", t.name))
            out.append(f"async def {d.name}(" + ", ".join(params) + "):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        query = session.query({t.cls})")
            if t.label and text_cols:
                ors = ", ".join(f'{t.cls}.{c.name}.ilike(f"%{{q}}%")' for c in text_cols)
                out.append("        if q:")
                out.append(f"            query = query.filter(or_({ors}))")
            for c in filters:
                out.append(f"        if {c.name} is not None:")
                out.append(f"            query = query.filter({t.cls}.{c.name} == {c.name})")
            out.append(f"        return [{t.cls}Out.model_validate(r) for r in query.order_by({t.cls}.id).limit(limit).all()]")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "get":
            out.append(_route("get", item, d.name, f"Get one {t.sing_words}",
                              f"Return every field of one {t.sing_words} by id; 404 if it does not exist.",
                              f"{t.cls}Out", t.name))
            out.append(f"async def {d.name}({path_param}):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        return {t.cls}Out.model_validate(get_or_404(session, {t.cls}, {pid}, {_q(t.sing_words)}))")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "create":
            status_note = f" New {t.words} start as {t.status[0]}." if t.status else ""
            out.append(_route("post", base, d.name, f"Create a {t.sing_words}",
                              f"Create a {t.sing_words}."
                              + (" Referenced rows must exist (404 otherwise)." if t.fks else "")
                              + (f" The {t.label.replace('_', ' ')} must be unique (409)." if t.label else "")
                              + status_note, f"{t.cls}Out", t.name, 201))
            out.append(f"async def {d.name}(payload: {t.cls}Create):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append("        data = payload.model_dump()")
            out += _fk_checks(scenario, t.columns, "data", "        ")
            out += _unique_check(t, "data", "        ", None)
            out.append(f"        row = {t.cls}(**data, created_at=NOW, updated_at=NOW)")
            out.append("        session.add(row)")
            out.append("        session.commit()")
            out.append("        session.refresh(row)")
            out.append(f"        return {t.cls}Out.model_validate(row)")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "update":
            fields = ", ".join(c.name for c in updatable(t))
            out.append(_route("patch", item, d.name, f"Update a {t.sing_words}",
                              f"Change one or more fields of a {t.sing_words} ({fields}); fields left out keep "
                              f"their values. 404 if the {t.sing_words} does not exist, 400 if no field is given.",
                              f"{t.cls}Out", t.name))
            out.append(f"async def {d.name}(payload: {t.cls}Update, {path_param}):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        row = get_or_404(session, {t.cls}, {pid}, {_q(t.sing_words)})")
            out.append("        changes = payload.model_dump(exclude_unset=True, exclude_none=True)")
            out.append("        if not changes:")
            out.append(f'            raise HTTPException(status_code=400, detail="nothing to update: give at least one of {fields}")')
            out += _fk_checks(scenario, updatable(t), "changes", "        ")
            out += _unique_check(t, "changes", "        ", pid)
            out.append("        for key, value in changes.items():")
            out.append("            setattr(row, key, value)")
            out.append("        row.updated_at = NOW")
            out.append("        session.commit()")
            out.append("        session.refresh(row)")
            out.append(f"        return {t.cls}Out.model_validate(row)")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "delete":
            kids = scenario.children_of(t.name)
            out.append(_route("delete", item, d.name, f"Delete a {t.sing_words}",
                              f"Permanently delete a {t.sing_words}. 404 if it does not exist"
                              + ("; 409 while other records still reference it." if kids else "."),
                              "DeleteResult", t.name))
            out.append(f"async def {d.name}({path_param}):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        row = get_or_404(session, {t.cls}, {pid}, {_q(t.sing_words)})")
            for kt, kc in kids:
                out.append(f"        count = session.query(func.count({kt.cls}.id)).filter({kt.cls}.{kc.name} == {pid}).scalar()")
                out.append("        if count:")
                out.append(f'            raise HTTPException(status_code=409, detail=f"{t.sing_words} {{{pid}}} is still referenced by {{count}} {kt.words}; remove those first")')
            out.append("        session.delete(row)")
            out.append("        session.commit()")
            out.append(f"        return DeleteResult(deleted=True, id={pid})")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "transition":
            tr = next(x for x in t.transitions if x.verb == d.verb)
            srcs = " or ".join(tr.sources)
            verb_words = tr.verb.replace("_", " ")
            out.append(_route("post", f"{item}/{tr.verb.replace('_', '-')}", d.name,
                              f"{verb_words.capitalize()} a {t.sing_words}",
                              f"{verb_words.capitalize()} a {t.sing_words}: its status goes from {srcs} to {tr.target}. "
                              f"409 if the {t.sing_words} is in any other status.", f"{t.cls}Out", t.name))
            out.append(f"async def {d.name}({path_param}):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        row = get_or_404(session, {t.cls}, {pid}, {_q(t.sing_words)})")
            out.append(f"        if row.status not in {tuple(tr.sources)!r}:")
            out.append(f'            raise HTTPException(status_code=409, detail=f"cannot {verb_words} {t.sing_words} {{{pid}}}: '
                       f'it is {{row.status}} (must be {srcs})")')
            out.append(f"        row.status = {_q(tr.target)}")
            out.append("        row.updated_at = NOW")
            out.append("        session.commit()")
            out.append("        session.refresh(row)")
            out.append(f"        return {t.cls}Out.model_validate(row)")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "adjust":
            a = next(x for x in t.adjusts if x.verb == d.verb)
            fw = a.field.replace("_", " ")
            is_float = t.column(a.field).py_type == "float"
            out.append(_route("post", f"{item}/{a.verb.replace('_', '-')}", d.name,
                              f"{a.verb.replace('_', ' ').capitalize()} ({'add to' if a.sign > 0 else 'take from'} {fw})",
                              f"{'Increase' if a.sign > 0 else 'Decrease'} the {fw} of a {t.sing_words} by amount."
                              + ("" if a.sign > 0 else f" 400 if the {t.sing_words} has less {fw} than amount."),
                              f"{t.cls}Out", t.name))
            out.append(f"async def {d.name}(payload: {t.cls}{camel(a.verb)}Request, {path_param}):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        row = get_or_404(session, {t.cls}, {pid}, {_q(t.sing_words)})")
            out.append(f"        current = row.{a.field} or 0")
            if a.sign < 0:
                out.append("        if current < payload.amount:")
                out.append(f'            raise HTTPException(status_code=400, detail=f"insufficient {fw}: {t.sing_words} {{{pid}}} has {{current}}, asked for {{payload.amount}}")')
            op = "+" if a.sign > 0 else "-"
            expr = f"round(current {op} payload.amount, 2)" if is_float else f"current {op} payload.amount"
            out.append(f"        row.{a.field} = {expr}")
            out.append("        row.updated_at = NOW")
            out.append("        session.commit()")
            out.append("        session.refresh(row)")
            out.append(f"        return {t.cls}Out.model_validate(row)")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "book":
            b = next(x for x in t.books if x.verb == d.verb)
            child = tables[b.child]
            person = tables[b.person_table]
            cw = b.capacity.replace("_", " ")
            out.append(_route("post", f"{item}/{b.verb.replace('_', '-')}", d.name,
                              f"{b.verb.replace('_', ' ').capitalize()} a {t.sing_words} for a {person.sing_words}",
                              f"Create a {child.sing_words} linking the {t.sing_words} and the {person.sing_words}, using "
                              f"one of its {cw}. 409 if none are left, if the {t.sing_words} is closed, or if the "
                              f"{person.sing_words} already holds an active one; 404 for unknown ids.",
                              f"{child.cls}Out", t.name, 201))
            out.append(f"async def {d.name}(payload: {t.cls}{camel(b.verb)}Request, {path_param}):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        row = get_or_404(session, {t.cls}, {pid}, {_q(t.sing_words)})")
            out.append(f"        get_or_404(session, {person.cls}, payload.{b.person_col}, {_q(person.sing_words)})")
            if t.status:
                closed = tuple(s for s in t.status if s in CLOSED_STATES)
                if closed:
                    out.append(f"        if row.status in {closed!r}:")
                    out.append(f'            raise HTTPException(status_code=409, detail=f"{t.sing_words} {{{pid}}} is {{row.status}} and takes no bookings")')
            out.append(f"        if row.{b.capacity} <= 0:")
            out.append(f'            raise HTTPException(status_code=409, detail=f"{t.sing_words} {{{pid}}} has no {cw}")')
            dup = f"{child.cls}.{b.parent_col} == {pid}, {child.cls}.{b.person_col} == payload.{b.person_col}"
            if child.status:
                dup += f", {child.cls}.status == {_q(child.status[0])}"
            out.append(f"        if session.query({child.cls}).filter({dup}).first() is not None:")
            out.append(f'            raise HTTPException(status_code=409, detail=f"{person.sing_words} {{payload.{b.person_col}}} already has an active {child.sing_words} for {t.sing_words} {{{pid}}}")')
            values = [f"{b.parent_col}={pid}", f"{b.person_col}=payload.{b.person_col}"]
            for c in child.columns:
                if c.name in (b.parent_col, b.person_col) or c.nullable:
                    continue
                values.append(f"{c.name}={_default_expr(c, child.cls)}")
            out.append(f"        booking = {child.cls}({', '.join(values)}, created_at=NOW, updated_at=NOW)")
            out.append(f"        row.{b.capacity} = row.{b.capacity} - 1")
            out.append("        row.updated_at = NOW")
            out.append("        session.add(booking)")
            out.append("        session.commit()")
            out.append("        session.refresh(booking)")
            out.append(f"        return {child.cls}Out.model_validate(booking)")
            out.append("    finally:")
            out.append("        session.close()")
        elif d.op == "transfer":
            tr = next(x for x in t.transfers if x.verb == d.verb)
            fw = tr.field.replace("_", " ")
            is_float = t.column(tr.field).py_type == "float"
            out.append(_route("post", f"{base}/{tr.verb.replace('_', '-')}", d.name,
                              f"{tr.verb.replace('_', ' ').capitalize()} between two {t.words}",
                              f"Move amount of {fw} from one {t.sing_words} to another. 400 if both ids are the same "
                              f"or the source has less {fw} than amount; 404 for unknown ids."
                              + (" 409 unless both are active." if "active" in t.status or "open" in t.status else ""),
                              f"List[{t.cls}Out]", t.name))
            out.append(f"async def {d.name}(payload: {t.cls}{camel(tr.verb)}Request):")
            out.append("    session = SessionLocal()")
            out.append("    try:")
            out.append(f"        if payload.from_{t.singular}_id == payload.to_{t.singular}_id:")
            out.append(f'            raise HTTPException(status_code=400, detail="from_{t.singular}_id and to_{t.singular}_id must differ")')
            out.append(f"        source = get_or_404(session, {t.cls}, payload.from_{t.singular}_id, {_q(t.sing_words)})")
            out.append(f"        target = get_or_404(session, {t.cls}, payload.to_{t.singular}_id, {_q(t.sing_words)})")
            live = next((s for s in ("active", "open") if s in t.status), None)
            if live:
                out.append("        for acct in (source, target):")
                out.append(f"            if acct.status != {_q(live)}:")
                out.append(f'                raise HTTPException(status_code=409, detail=f"{t.sing_words} {{acct.id}} is {{acct.status}}, not {live}")')
            out.append(f"        available = source.{tr.field} or 0")
            out.append("        if available < payload.amount:")
            out.append(f'            raise HTTPException(status_code=400, detail=f"insufficient {fw}: {t.sing_words} {{source.id}} has {{available}}, asked for {{payload.amount}}")')
            if is_float:
                out.append(f"        source.{tr.field} = round(available - payload.amount, 2)")
                out.append(f"        target.{tr.field} = round((target.{tr.field} or 0) + payload.amount, 2)")
            else:
                out.append(f"        source.{tr.field} = available - payload.amount")
                out.append(f"        target.{tr.field} = (target.{tr.field} or 0) + payload.amount")
            out.append("        source.updated_at = NOW")
            out.append("        target.updated_at = NOW")
            out.append("        session.commit()")
            out.append(f"        return [{t.cls}Out.model_validate(source), {t.cls}Out.model_validate(target)]")
            out.append("    finally:")
            out.append("        session.close()")
        out += ["", ""]
    return out


def _default_expr(c: Column, cls: str) -> str:
    """The value a booking gives a required column of the booking row."""
    if c.kind == "status":
        return _q(c.args[0])
    if c.kind == "enum":
        return _q(c.args[0])
    if c.py_type == "int":
        return "0"
    if c.py_type == "float":
        return "0.0"
    if c.py_type == "bool":
        return "False"
    if c.kind == "date":
        return "NOW[:10]"
    if c.kind == "code":
        return f'"{c.args[0] if c.args else "C"}-" + str(90001 + (session.query(func.max({cls}.id)).scalar() or 0))'
    return '""'


def emit_app(scenario: Scenario) -> str:
    """The complete app.py source of a scenario."""
    tools = tool_defs(scenario)
    head = f'''"""{scenario.title}: {scenario.description}

Tool server generated by agentworld synth (offline generator, scenario {scenario.env_id}).
FastAPI + SQLAlchemy in AWM's style: every route is a tool named by its operation_id.
"""

import os
from typing import List, Literal, Optional

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Boolean, Column, Float, ForeignKey, Integer, Text, create_engine, func, or_
from sqlalchemy.orm import declarative_base, sessionmaker

DATABASE_PATH = os.getenv("DATABASE_PATH") or "sqlite:///{scenario.env_id}.db"
engine = create_engine(DATABASE_PATH, connect_args={{"check_same_thread": False}})
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
Base = declarative_base()

CURRENT_USER_ID = 1
NOW = "{NOW}"  # a fixed clock keeps episodes reproducible


'''
    lines = _models(scenario)
    lines += _schemas(scenario)
    lines += [
        f"app = FastAPI(title={_q(scenario.title)}, description={_q(scenario.description)}, version=\"1.0.0\")",
        "",
        "",
        "def get_or_404(session, model, row_id, what):",
        "    row = session.get(model, row_id)",
        "    if row is None:",
        '        raise HTTPException(status_code=404, detail=f"{what} {row_id} not found")',
        "    return row",
        "",
        "",
    ]
    lines += _routes(scenario, tools)
    lines += [
        'if __name__ == "__main__":',
        "    import uvicorn",
        "",
        '    uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))',
        "",
    ]
    return head + "\n".join(lines)
