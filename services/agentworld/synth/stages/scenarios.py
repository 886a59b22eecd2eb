"""Stage 1: scenarios by self-instruct from AWM's seed scenarios, near-duplicates rejected (similarity > 0.85)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from agentworld.bundle.awm_import import normalise_name
from agentworld.llm import LLMRequestError, parse_llm_spec
from agentworld.synth.stages.common import Ctx, StageCheckError, generate_checked, read_json, stage_marker, write_json
from agentworld.synth.stages.similarity import cosine_dense, local_similarity_matrix

STAGE = "scenarios"
SCHEMA = {
    "type": "object",
    "properties": {"scenarios": {"type": "array", "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
        "required": ["name", "description"]}}},
    "required": ["scenarios"],
}
SYSTEM = stage_marker(STAGE) + """
You invent realistic software applications (web apps, SaaS tools, internal systems) that an AI agent could operate
through an HTTP API backed by a SQLite database. Each scenario has a short snake_case `name` (e.g.
`veterinary_clinic_booking`) and a `description` of 3-5 sentences saying who the users are, what data the system holds
and what users can look up and change. Prefer everyday, stateful domains with clear entities and actions. Every
scenario must differ clearly from the examples and from the ones already accepted."""


def load_seeds(path: Path) -> list[dict[str, str]]:
    seeds = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            seeds.append({"name": rec["name"], "description": rec.get("description", "")})
    if not seeds:
        raise ValueError(f"{path}: no seed scenarios")
    return seeds


def _text(s: dict[str, str]) -> str:
    return f"{s['name'].replace('_', ' ')}: {s['description']}"


async def _similarities(ctx: Ctx, candidates: list[dict], existing: list[dict],
                        cache: dict[str, list[float]]) -> list[list[float]]:
    """Similarity of each candidate to every existing scenario and to the other candidates."""
    cand_texts, ex_texts = [_text(c) for c in candidates], [_text(e) for e in existing]
    if not ctx.opts.embeddings:
        return local_similarity_matrix(cand_texts, ex_texts)
    model = parse_llm_spec(ctx.opts.embeddings).model
    missing = [t for t in ex_texts + cand_texts if t not in cache]
    if missing:
        try:
            vectors = await ctx.embedder.embed(STAGE, missing, model)  # type: ignore[union-attr]
        except LLMRequestError as exc:
            ctx.notes.append(f"scenarios: embeddings failed ({exc}); used local text similarity for this batch")
            return local_similarity_matrix(cand_texts, ex_texts)
        cache.update(zip(missing, vectors, strict=True))
    everything = ex_texts + cand_texts
    return [[cosine_dense(cache[c], cache[o]) for o in everything] for c in cand_texts]


async def run(ctx: Ctx, seeds: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Returns the accepted scenarios ({id, name, description}); output: scenarios.json."""
    out_path = ctx.work / "scenarios.json"
    done = read_json(out_path)
    if done is not None and len(done["accepted"]) >= ctx.opts.n:
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return done["accepted"][: ctx.opts.n]
    rng = random.Random(ctx.opts.seed)
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    emb_cache: dict[str, list[float]] = {}
    threshold = ctx.opts.dedup_threshold
    max_rounds = 2 * (ctx.opts.n // max(1, ctx.opts.scenario_batch)) + 4
    for round_no in range(max_rounds):
        if len(accepted) >= ctx.opts.n:
            break
        want = min(ctx.opts.scenario_batch, ctx.opts.n - len(accepted) + 2)
        examples = rng.sample(seeds, k=min(5, len(seeds)))
        user = (
            f"Here are example scenarios:\n{json.dumps(examples, indent=1)}\n\n"
            + (f"Already accepted (do not repeat or paraphrase these): "
               f"{', '.join(a['name'] for a in accepted)}\n\n" if accepted else "")
            + f"Invent {want} new, diverse scenarios (round {round_no + 1}). "
            'Answer with a JSON object: {"scenarios": [{"name": ..., "description": ...}, ...]}.'
        )

        def check(payload: dict, _completion: Any) -> list[dict[str, str]]:
            items = payload.get("scenarios")
            if not isinstance(items, list) or not items:
                raise StageCheckError('the object must have a non-empty "scenarios" list')
            good = [i for i in items if isinstance(i, dict) and str(i.get("name", "")).strip()
                    and len(str(i.get("description", "")).strip()) >= 20]
            if not good:
                raise StageCheckError("every scenario needs a name and a description of at least one sentence")
            return [{"name": str(i["name"]).strip(), "description": str(i["description"]).strip()} for i in good]

        candidates = await generate_checked(ctx, STAGE, SYSTEM, user, check, json_schema=SCHEMA)
        existing = seeds + accepted
        sims = await _similarities(ctx, candidates, existing, emb_cache)
        kept_idx: list[int] = []
        for i, cand in enumerate(candidates):
            env_id = normalise_name(cand["name"])
            best, best_name = 0.0, ""
            for j, other in enumerate(existing):
                if sims[i][j] > best:
                    best, best_name = sims[i][j], other["name"]
            for k in kept_idx:  # earlier candidates of this batch that were accepted
                s = sims[i][len(existing) + k]
                if s > best:
                    best, best_name = s, candidates[k]["name"]
            if not env_id:
                rejected.append({**cand, "reason": "empty name"})
            elif any(a["id"] == env_id for a in accepted):
                rejected.append({**cand, "reason": f"name {env_id} already taken"})
            elif best > threshold:
                rejected.append({**cand, "reason": f"near-duplicate of {best_name} (similarity {best:.2f})"})
            elif len(accepted) < ctx.opts.n:
                kept_idx.append(i)
                accepted.append({"id": env_id, **cand})
                ctx.on_unit_done(STAGE)
    if len(accepted) < ctx.opts.n:
        ctx.notes.append(f"scenarios: only {len(accepted)} of {ctx.opts.n} accepted after {max_rounds} rounds")
    write_json(out_path, {"accepted": accepted, "rejected": rejected})
    return accepted
