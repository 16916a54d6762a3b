"""The review desk behind `submit_for_review` and `get_reviewed_result` (MCP) and `POST /review`,
`GET /review/{id}` (REST): a case goes through the clinician-review workflow (hai_tools.workflow) on this
server's own skills, and its caller gets back only what a clinician approved or edited.

Reviewers decide with the workflow CLI on the same workflow config:
    python -m hai_tools.workflow --config configs/workflow.yaml list / show / approve / edit / reject
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hai_tools.callers import Caller
from hai_tools.workflow.service import ReviewService, load_workflow_config
from skills.contracts import (
    CallerRef,
    EmbedRequest,
    ReasonRequest,
    ReviewedResult,
    ReviewHandle,
    ScreeningRequest,
)
from skills.embed_skill import EmbedSkill
from skills.reasoner_skill import ReasonerSkill


class ServerSkills:
    """The workflow's skills protocol on the server's own EmbedSkill and ReasonerSkill (no MCP round trip)."""

    def __init__(self, embed: EmbedSkill, reasoner: ReasonerSkill) -> None:
        self._embed, self._reasoner = embed, reasoner

    async def open(self) -> None:
        return None

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        return (await self._embed.embed(EmbedRequest(texts=texts))).model_dump()

    async def reason(self, question: str, context: list[str], max_new_tokens: int) -> dict[str, Any]:
        request = ReasonRequest(question=question, context=context, max_new_tokens=max_new_tokens)
        return (await self._reasoner.reason(request)).model_dump()

    async def screen(self, case_id: str, age_months: int, observations: str) -> dict[str, Any]:
        request = ScreeningRequest(case_id=case_id, age_months=age_months, observations=observations)
        return (await self._reasoner.screen(request)).model_dump()

    async def aclose(self) -> None:
        return None


class ReviewDesk:
    def __init__(self, embed: EmbedSkill, reasoner: ReasonerSkill, workflow_config: str | None) -> None:
        self._skills = ServerSkills(embed, reasoner)
        self._config_path = Path(workflow_config) if workflow_config else None
        self._service: ReviewService | None = None

    @property
    def service(self) -> ReviewService:
        """Opened on first use, so a server that no one submits to writes no workflow files."""
        if self._service is None:
            self._service = ReviewService(load_workflow_config(self._config_path), skills=self._skills)
        return self._service

    async def submit(self, case: dict[str, Any], caller: Caller) -> ReviewHandle:
        payload = await self.service.start(case, submitted_by=caller)
        return ReviewHandle(
            review_id=payload["thread_id"],
            case_id=payload["case"]["case_id"],
            submitted_by=CallerRef(id=caller.id, role=caller.role),
        )

    def result(self, review_id: str, caller: Caller) -> ReviewedResult:
        return ReviewedResult.model_validate(self.service.reviewed_result(review_id, caller))
