"""The clinical workflow as a LangGraph graph:

    intake -> retrieve (EmbedSkill) -> reason (ReasonerSkill) -> safety_check -> clinician_review -> finalize

`clinician_review` pauses the graph with `interrupt()` carrying the proposal, the model identity, the evidence
and the safety flags; it resumes only with a decision signed by a registered reviewer's own key for this exact
case and proposal. `finalize` re-verifies that decision, builds the final record (approve releases the model's
answer, edit the clinician's text and keeps both, reject releases nothing), and stores it, encrypted, with its
entry in the review chain (hai_tools.workflow.records). The graph has no edge
around the review node, and `finalize` refuses any state that did not come through it.

For other LangGraph apps: `build_graph(...)` returns the uncompiled StateGraph; `make_review_node` and
`make_finalize_node` are the two nodes to reuse in a graph of your own.
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import Any, NotRequired, TypedDict

import numpy as np
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools.errors import HaiError
from hai_tools.keys import key_id, sign
from hai_tools.manifest import canonical_json
from hai_tools.workflow.records import RecordStore
from hai_tools.workflow.review import (
    ReviewRefused,
    new_salt,
    proposal_hash,
    release_statement,
    verify_signed_decision,
)
from hai_tools.workflow.reviewers import ReviewerRegistry
from hai_tools.workflow.skills_client import Skills

log = logging.getLogger("hai_tools.workflow")


class CaseInvalid(HaiError):
    """The case failed intake validation; no workflow was started."""


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    age_months: int = Field(ge=0, le=216, strict=True)
    observations: str = Field(min_length=1, max_length=4000)
    question: str | None = Field(None, min_length=1, max_length=1000)


def validate_case(raw: Any) -> Case:
    try:
        return Case.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "case"
        raise CaseInvalid(f"invalid case: {where}: {error['msg']}") from None


class InputState(TypedDict):
    case: dict[str, Any]
    submitted_by: NotRequired[dict[str, str]]


class WorkflowState(TypedDict, total=False):
    case: dict[str, Any]
    case_salt: str
    submitted_by: dict[str, str]
    evidence: list[dict[str, Any]]
    proposal: dict[str, Any]
    safety_flags: list[str]
    proposal_hash: str
    decision: dict[str, Any]
    record: dict[str, Any]


def load_corpus(path: str | None = None) -> list[dict[str, str]]:
    if path:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    else:
        text = importlib.resources.files("hai_tools").joinpath("data/milestone_corpus.yaml").read_text()
        data = yaml.safe_load(text)
    return [{"id": str(p["id"]), "text": str(p["text"])} for p in data["passages"]]


def _proposal_hash(state: WorkflowState) -> str:
    return proposal_hash(
        state["case_salt"], state["case"], state["proposal"], state["evidence"], state["safety_flags"]
    )


def make_review_node(reviewers: ReviewerRegistry) -> Any:
    """The clinician_review node: pause with everything the clinician needs; accept only a decision signed by a
    registered, active reviewer's key."""
    from langgraph.config import get_config
    from langgraph.types import interrupt

    def clinician_review(state: WorkflowState) -> dict[str, Any]:
        thread_id = get_config()["configurable"]["thread_id"]
        expected = _proposal_hash(state)
        payload = {
            "thread_id": thread_id,
            "case": state["case"],
            "case_salt": state["case_salt"],
            "proposal": state["proposal"],
            "evidence": state["evidence"],
            "safety_flags": state["safety_flags"],
            "proposal_hash": expected,
            "requires_clinician_review": True,
        }
        while True:  # a resume that is not a valid signed decision pauses the case again, unchanged
            raw = interrupt(payload)
            try:
                decision = verify_signed_decision(raw, reviewers, thread_id, expected, state["case_salt"])
            except ReviewRefused as exc:
                log.warning("case thread %s: resume refused (%s); still waiting for review", thread_id, exc)
                continue
            return {"decision": decision.model_dump(), "proposal_hash": expected}

    return clinician_review


def make_finalize_node(key: Ed25519PrivateKey, store: RecordStore, reviewers: ReviewerRegistry) -> Any:
    """The finalize node: the final record and its review-chain entry; refuses a decision that did not come
    through review."""
    from langgraph.config import get_config
    from langgraph.graph import END

    public = key.public_key()

    def finalize(state: WorkflowState) -> Any:
        from langgraph.types import Command

        thread_id = get_config()["configurable"]["thread_id"]
        expected = _proposal_hash(state)
        try:
            decision = verify_signed_decision(
                state.get("decision"), reviewers, thread_id, expected, state["case_salt"]
            )
        except ReviewRefused as exc:
            # reached without a decision from the review node (e.g. a state written by hand): back to review
            log.warning(
                "case thread %s: finalize refused (%s); sent back to clinician review", thread_id, exc
            )
            return Command(goto="clinician_review", update={"decision": None})
        proposal = state["proposal"]
        model_text = proposal.get("answer_text")
        statement = decision.statement
        released = {"approve": model_text, "edit": decision.text, "reject": None}[statement.action]
        reviewer = reviewers.key(statement.reviewer_id, statement.reviewer_key_id, require_active=False)
        record = {
            "thread_id": thread_id,
            "case_id": state["case"]["case_id"],
            "decision": statement.action,
            "reviewer_id": statement.reviewer_id,
            "reviewer_role": reviewer.role,
            "reviewer_key_id": statement.reviewer_key_id,
            "decided_at": statement.decided_at,
            "released": released is not None,
            "released_text": released,
            "model_answer": model_text,
            "clinician_text": decision.text,
            "reject_reason": decision.reason,
            "model": proposal.get("model"),
            "backend": proposal.get("backend"),
            "model_audit_id": proposal.get("audit_id"),
            "evidence_ids": [e["id"] for e in state["evidence"]],
            "safety_flags": state["safety_flags"],
            "proposal_hash": expected,
            "signed_decision": decision.model_dump(),
            "disclaimer": proposal.get("disclaimer"),
            "finalized_at": statement.decided_at,
            "signing_key": key_id(public),
            "submitted_by": state.get("submitted_by"),
        }
        record["release"] = release_statement(record)
        record["release_signature"] = sign(key, canonical_json(record["release"]))
        store.put_record(thread_id, record, state["case_salt"], decision.model_dump(), key)
        store.set_status(thread_id, f"finalized:{statement.action}")
        return Command(goto=END, update={"record": record})

    return finalize


def build_graph(
    skills: Skills,
    key: Ed25519PrivateKey,
    store: RecordStore,
    reviewers: ReviewerRegistry,
    corpus: list[dict[str, str]] | None = None,
    top_k: int = 2,
    max_new_tokens: int = 128,
    guard: Any = None,
) -> Any:
    """The workflow graph, uncompiled: compile it with the checkpointer of your deployment. `guard`
    (hai_tools.guard.Guard) checks each proposal's text once more before review; default: the policy's rules."""
    from langgraph.graph import END, START, StateGraph

    from hai_tools.guard import Guard
    from hai_tools.safety import default_policy

    corpus = corpus if corpus is not None else load_corpus()
    guard = guard if guard is not None else Guard(default_policy())
    corpus_vectors: list[np.ndarray] = []

    def intake(state: InputState) -> dict[str, Any]:
        return {"case": validate_case(state["case"]).model_dump(), "case_salt": new_salt()}

    async def retrieve(state: WorkflowState) -> dict[str, Any]:
        case = state["case"]
        if not corpus_vectors:
            result = await skills.embed([p["text"] for p in corpus])
            corpus_vectors.append(np.asarray(result["vectors"]))
        query = f"Age {case['age_months']} months. {case['observations']}"
        vector = np.asarray((await skills.embed([query]))["vectors"][0])
        scores = corpus_vectors[0] @ vector
        order = np.argsort(-scores)[:top_k]
        return {
            "evidence": [
                {"id": corpus[i]["id"], "text": corpus[i]["text"], "score": round(float(scores[i]), 4)}
                for i in order
            ]
        }

    async def reason(state: WorkflowState) -> dict[str, Any]:
        """A screening case (no question) gets the screening decision: a label chosen by the `screen` tool's
        constrained procedure and its one-sentence rationale; a case with a question gets `reason`'s answer
        to it, grounded in the retrieved evidence."""
        case = state["case"]
        label = None
        if case.get("question"):
            question = (
                f"Child aged {case['age_months']} months. Observations: {case['observations']}\n"
                f"Question: {case['question']}"
            )
            result = await skills.reason(question, [e["text"] for e in state["evidence"]], max_new_tokens)
            text = "\n".join(t for t in (result.get("answer"), result.get("rationale")) if t) or None
        else:
            result = await skills.screen(case["case_id"], case["age_months"], case["observations"])
            label = result.get("label")
            text = (
                f"Screening decision: {label}."
                + (f" {result['rationale']}" if result.get("rationale") else "")
                if label
                else None
            )
        return {
            "proposal": {
                "answer_text": text,
                "label": label,
                "rationale": result.get("rationale"),
                "abstained": bool(result.get("abstained")),
                "abstain_reason": result.get("abstain_reason"),
                "requires_clinician_review": result.get("requires_clinician_review"),
                "disclaimer": result.get("disclaimer"),
                "model": result.get("model"),
                "backend": result.get("backend"),
                "audit_id": result.get("audit_id"),
            }
        }

    def safety_check(state: WorkflowState) -> dict[str, Any]:
        proposal, flags = state["proposal"], []
        if proposal.get("requires_clinician_review") is not True:
            flags.append("skill result lacks the clinician-review flag")
        if not proposal.get("disclaimer"):
            flags.append("skill result lacks the decision-support disclaimer")
        if not proposal.get("model"):
            flags.append("no model identity on the result")
        if proposal.get("abstained"):
            flags.append(f"model abstained: {proposal.get('abstain_reason')}")
        elif not proposal.get("answer_text"):
            flags.append("empty answer")
        else:
            verdict = guard.answer(str(proposal["answer_text"]))
            if verdict is not None:
                flags.append(
                    f"answer flagged by the guard ({verdict.rule}, {verdict.source}): {verdict.reason}"
                )
        if not state["evidence"]:
            flags.append("no supporting evidence retrieved")
        return {"safety_flags": flags}

    graph = StateGraph(WorkflowState, input_schema=InputState)
    graph.add_node("intake", intake)
    graph.add_node("retrieve", retrieve)
    graph.add_node("reason", reason)
    graph.add_node("safety_check", safety_check)
    graph.add_node("clinician_review", make_review_node(reviewers))
    graph.add_node(
        "finalize", make_finalize_node(key, store, reviewers), destinations=("clinician_review", END)
    )
    graph.add_edge(START, "intake")
    graph.add_edge("intake", "retrieve")
    graph.add_edge("retrieve", "reason")
    graph.add_edge("reason", "safety_check")
    graph.add_edge("safety_check", "clinician_review")
    graph.add_edge("clinician_review", "finalize")
    return graph
