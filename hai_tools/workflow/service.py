"""The review service: starts cases (the graph runs until it pauses at clinician_review), lists and shows
pending cases, and accepts decisions signed by registered reviewers' own keys, each in whatever process calls
it; state lives in the checkpointer (SQLite by default, Postgres by configuration; encrypted at rest with the
data key) and the record store (case data encrypted, final records in the review chain). `erase` forgets one
case's patient data; `verify` walks the review chain."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools.callers import Caller
from hai_tools.config_file import read_yaml_mapping
from hai_tools.errors import ConfigError, HaiError
from hai_tools.keys import load_or_create_private, secret, sign
from hai_tools.settings import hai_home
from hai_tools.workflow.graph import build_graph, load_corpus, validate_case
from hai_tools.workflow.record_db import is_postgres
from hai_tools.workflow.records import RecordStore, verify_review_chain
from hai_tools.workflow.review import (
    DecisionInput,
    DecisionStatement,
    ReviewRefused,
    SignedDecision,
    statement_for,
    verify_signed_decision,
)
from hai_tools.workflow.reviewers import ReviewerRegistry
from hai_tools.workflow.skills_client import McpConfig, McpSkills, Skills


class CaseNotFound(HaiError):
    """No such case, or it is not waiting for review."""


class ReviewWebConfig(BaseModel):
    """`web:` of the workflow config: the review web page (`python -m hai_tools.workflow serve`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="listen address (put TLS in front for anything but loopback)")
    port: int = Field(8770, ge=1, le=65535)
    keys_dir: str | None = Field(
        None,
        description="reviewers' passphrase-wrapped keys held by the server for signing without JavaScript "
        "(ID.key; default $HAI_HOME/workflow/reviewer-keys)",
    )
    session_idle_minutes: int = Field(30, ge=1, le=24 * 60)
    max_failed_logins: int = Field(5, ge=1, le=100, description="failures within lockout_minutes that lock")
    lockout_minutes: int = Field(15, ge=1, le=24 * 60)
    secure_cookies: bool = Field(False, description="mark the session cookie Secure (serving behind HTTPS)")


class WorkflowConfig(BaseModel):
    """`configs/workflow.yaml`; paths default under `$HAI_HOME/workflow/`."""

    model_config = ConfigDict(extra="forbid")

    mcp: McpConfig = Field(default_factory=McpConfig)
    checkpointer: str = Field(
        "sqlite",
        description="'sqlite' ($HAI_HOME/workflow/checkpoints.sqlite), a sqlite file path, or postgresql://...",
    )
    records: str | None = Field(
        None,
        description="final records and the case index: a SQLite file ($HAI_HOME/workflow/records.sqlite), or "
        "postgresql://... shared by server replicas",
    )
    reviewers: str | None = Field(None, description="YAML registry of reviewers' public keys (admin-signed)")
    admin_public_key: str | None = Field(
        None,
        description="the admin's ed25519 public key that signs the reviewer registry (default admin.pub)",
    )
    signing_key: str | None = Field(
        None, description="the service's ed25519 key: seals final records and chain entries (never decisions)"
    )
    data_key_file: str | None = Field(
        None,
        description="AES-256 data key for checkpoints and case data ($HAI_DATA_KEY first; default data.key)",
    )
    corpus: str | None = Field(None, description="evidence passages YAML; default: the packaged milestones")
    guard: str | None = Field(
        None, description="guard artifact that checks each proposal again before review (default: rules only)"
    )
    top_k: int = Field(2, ge=1, le=8)
    max_new_tokens: int = Field(128, ge=1, le=512)
    web: ReviewWebConfig = Field(default_factory=ReviewWebConfig)

    def path(self, value: str | None, default: str) -> Path:
        return Path(value).expanduser() if value else hai_home() / "workflow" / default


def load_workflow_config(path: Path | None) -> WorkflowConfig:
    path = path or (
        Path(os.environ["HAI_WORKFLOW_CONFIG"]) if os.environ.get("HAI_WORKFLOW_CONFIG") else None
    )
    if path is None:
        return WorkflowConfig()
    try:
        return WorkflowConfig.model_validate(read_yaml_mapping(path, "workflow keys"))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(
            f"workflow config {path}: {'.'.join(map(str, error['loc']))}: {error['msg']}"
        ) from None


@asynccontextmanager
async def open_checkpointer(spec: str, default: Path, data_key: bytes | None = None) -> AsyncIterator[Any]:
    """The checkpointer `spec` names; with `data_key`, every value it stores is encrypted (AES-256-GCM)."""
    from hai_tools.at_rest import encrypted_serializer

    async with _checkpointer(spec, default) as saver:
        if data_key is not None:
            saver.serde = encrypted_serializer(data_key)
        yield saver


def sqlite_checkpoint_path(spec: str, default: Path) -> Path:
    """The SQLite file a checkpointer spec names: 'sqlite' (the default file), a path, or sqlite:///path."""
    return default if spec == "sqlite" else Path(spec.removeprefix("sqlite:///")).expanduser()


@asynccontextmanager
async def _checkpointer(spec: str, default: Path) -> AsyncIterator[Any]:
    if is_postgres(spec):
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                "a Postgres checkpointer needs langgraph-checkpoint-postgres (pip install "
                "langgraph-checkpoint-postgres 'psycopg[binary]')"
            ) from None
        async with AsyncPostgresSaver.from_conn_string(spec) as saver:
            await saver.setup()
            yield saver
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = sqlite_checkpoint_path(spec, default)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver


class ReviewService:
    def __init__(
        self, config: WorkflowConfig, env: dict[str, str] | None = None, skills: Skills | None = None
    ) -> None:
        """`skills`: how the graph reaches the skills; default MCP as `config.mcp` says (the MCP server itself
        passes its own skills when it backs `submit_for_review`)."""
        self.config = config
        self.data_key = secret(
            "HAI_DATA_KEY", config.data_key_file, config.path(None, "data.key"), "data-at-rest"
        )
        records = config.records
        self.store = RecordStore(
            records if records and is_postgres(records) else config.path(records, "records.sqlite"),
            self.data_key,
        )
        self.reviewers = ReviewerRegistry(
            config.path(config.reviewers, "reviewers.yaml"),
            config.path(config.admin_public_key, "admin.pub"),
        )
        self.key = load_or_create_private(config.path(config.signing_key, "review.key"))
        self.skills: Skills = skills or McpSkills(config.mcp, env)
        self._corpus = load_corpus(config.corpus)
        from hai_tools.guard import load_guard

        self._guard = load_guard(None, Path(config.guard) if config.guard else None)

    @asynccontextmanager
    async def graph(self) -> AsyncIterator[Any]:
        graph = build_graph(
            self.skills,
            self.key,
            self.store,
            self.reviewers,
            self._corpus,
            self.config.top_k,
            self.config.max_new_tokens,
            self._guard,
        )
        default = self.config.path(None, "checkpoints.sqlite")
        async with open_checkpointer(self.config.checkpointer, default, self.data_key) as saver:
            yield graph.compile(checkpointer=saver)

    async def start(
        self, case: dict[str, Any], thread_id: str | None = None, submitted_by: Caller | None = None
    ) -> dict[str, Any]:
        """Run a new case up to the clinician review; returns the review payload. The thread id is random (it
        carries no case id into logs). `submitted_by` (the server's caller) is kept in the case and in its
        final record."""
        import uuid

        checked = validate_case(case)
        thread_id = thread_id or uuid.uuid4().hex
        async with self.graph() as graph:
            config = {"configurable": {"thread_id": thread_id}}
            if (await graph.aget_state(config)).values or self.store.status(thread_id) is not None:
                raise HaiError(f"case thread {thread_id} already exists")
            await self.skills.open()  # open the connection in this task (not inside a node)
            try:
                started: dict[str, Any] = {"case": checked.model_dump()}
                if submitted_by is not None:
                    started["submitted_by"] = {"id": submitted_by.id, "role": submitted_by.role}
                await graph.ainvoke(started, config)
            finally:
                await self.skills.aclose()
            if submitted_by is not None:  # recorded with the case, once it is waiting for review
                self.store.set_submitter(thread_id, submitted_by.id, submitted_by.role)
            self.store.put_case(thread_id, {"case_id": checked.case_id})
            self.store.set_status(thread_id, "pending_review")
            return await self._pending(graph, thread_id)

    async def _pending(self, graph: Any, thread_id: str) -> dict[str, Any]:
        state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        for task in state.tasks:
            for item in task.interrupts:
                if task.name == "clinician_review":
                    return dict(item.value)
        if not state.values:
            raise CaseNotFound(f"no case {thread_id}")
        raise CaseNotFound(f"case {thread_id} is not waiting for review")

    async def show(self, thread_id: str) -> dict[str, Any]:
        async with self.graph() as graph:
            return await self._pending(graph, thread_id)

    def pending(self) -> list[dict[str, str]]:
        return self.store.cases("pending_review")

    async def pending_payloads(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """Every case waiting for review with its review payload (one checkpointer session for all)."""
        out = []
        async with self.graph() as graph:
            for row in self.pending():
                try:
                    out.append((row, await self._pending(graph, row["thread_id"])))
                except CaseNotFound:  # decided between the listing and the read
                    continue
        return out

    async def prepare(self, thread_id: str, decision: dict[str, Any]) -> DecisionStatement:
        """The statement a reviewer signs for `decision` on this pending case: the reviewer must be registered
        and active; the statement carries their key id, the proposal hash and keyed digests of their text."""
        try:
            checked = DecisionInput.model_validate(decision)
        except ValidationError as exc:
            raise ReviewRefused(f"malformed decision: {exc.errors()[0]['msg']}") from None
        reviewer = self.reviewers.active(checked.reviewer_id)
        if reviewer is None:
            raise ReviewRefused(f"reviewer '{checked.reviewer_id}' is not authorised")
        payload = await self.show(thread_id)
        return statement_for(
            checked, reviewer.key_id, thread_id, payload["proposal_hash"], payload["case_salt"]
        )

    async def submit(
        self, statement: DecisionStatement, signature: str, text: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Resume the case with a signed decision; returns the final record. A decision that does not verify
        leaves the case waiting for review, unchanged, and is refused."""
        from langgraph.types import Command

        signed = SignedDecision(statement=statement, text=text, reason=reason, signature=signature)
        thread_id = statement.thread_id
        async with self.graph() as graph:
            payload = await self._pending(graph, thread_id)
            verify_signed_decision(
                signed.model_dump(), self.reviewers, thread_id, payload["proposal_hash"], payload["case_salt"]
            )
            result = await graph.ainvoke(
                Command(resume=signed.model_dump()), {"configurable": {"thread_id": thread_id}}
            )
        record = self.store.get_record(thread_id, self.key.public_key())
        if record is None or result.get("record") != record:
            raise HaiError(f"case {thread_id} did not finalise")
        return record

    async def decide(
        self, thread_id: str, decision: dict[str, Any], reviewer_key: Ed25519PrivateKey
    ) -> dict[str, Any]:
        """Prepare, sign with the reviewer's own private key (held by the caller, never by the service), submit."""
        statement = await self.prepare(thread_id, decision)
        return await self.submit(
            statement,
            sign(reviewer_key, statement.payload()),
            decision.get("text"),
            decision.get("reason"),
        )

    def record(self, thread_id: str) -> dict[str, Any] | None:
        """The verified final record, or None while the case awaits review."""
        return self.store.get_record(thread_id, self.key.public_key())

    async def erase(self, thread_id: str) -> None:
        """Forget one case's patient data: its checkpoints, its encrypted data and key; the review chain keeps its
        entry (digests only) and still verifies."""
        if self.store.status(thread_id) is None:
            raise CaseNotFound(f"no case {thread_id}")
        async with self.graph() as graph:
            await graph.checkpointer.adelete_thread(thread_id)
        self.store.erase(thread_id)
        spec = self.config.checkpointer
        if not is_postgres(spec):
            import sqlite3

            path = sqlite_checkpoint_path(spec, self.config.path(None, "checkpoints.sqlite"))
            with sqlite3.connect(path) as db:
                db.execute("VACUUM")

    def verify(self, expect_head: str | None = None) -> tuple[int, str, int]:
        """Walk the review chain against the reviewer registry and the stored cases."""
        return verify_review_chain(
            self.store.chain(), self.reviewers, self.key.public_key(), self.store, expect_head
        )

    def reviewed_result(self, thread_id: str, caller: Caller) -> dict[str, Any]:
        """What a caller may see of a case it submitted: `pending`, `rejected`, or `released` with the text a
        clinician approved or edited and the signed release statement; never the unreviewed model text.
        A pipeline caller sees only its own submissions (another's id reads as unknown)."""
        submitter = self.store.submitter(thread_id)
        known = self.store.status(thread_id) is not None
        if not known or (caller.role == "pipeline" and (submitter or {}).get("id") != caller.id):
            raise CaseNotFound(f"no review {thread_id} for caller {caller.id}")
        record = self.record(thread_id)
        if record is None:
            return {"review_id": thread_id, "status": "pending"}
        statement = record["release"]
        return {
            "review_id": thread_id,
            "status": "rejected" if statement["decision"] == "reject" else "released",
            "text": statement["released_text"],
            "statement": statement,
            "signature": record["release_signature"],
        }

    def released_text(self, thread_id: str) -> str | None:
        """The only way to read what a case released: from its verified final record; refuses before review."""
        record = self.record(thread_id)
        if record is None:
            raise ReviewRefused(f"case {thread_id} has not been reviewed: nothing is released")
        return record["released_text"]  # type: ignore[no-any-return]
