"""The LangGraph clinical workflow over the MCP skills, with a clinician-review step no answer can skip.

    from hai_tools.workflow import ReviewService, load_workflow_config
    service = ReviewService(load_workflow_config(Path("configs/workflow.yaml")))
    payload = asyncio.run(service.start({"case_id": "c1", "age_months": 18, "observations": "..."}))
    key = load_private(profile_dir() / "dr-lee.key", os.environ["HAI_REVIEWER_PASSPHRASE"])  # the reviewer's own
    record = asyncio.run(service.decide(payload["thread_id"], {"action": "approve", "reviewer_id": "dr-lee"}, key))

For your own LangGraph app: `build_graph` (uncompiled), `make_review_node`, `make_finalize_node`, `McpSkills`.
"""

from hai_tools.workflow.graph import build_graph, make_finalize_node, make_review_node, validate_case
from hai_tools.workflow.records import RecordStore
from hai_tools.workflow.review import ReviewRefused
from hai_tools.workflow.reviewers import ReviewerRegistry
from hai_tools.workflow.service import ReviewService, WorkflowConfig, load_workflow_config
from hai_tools.workflow.skills_client import McpConfig, McpSkills

__all__ = [
    "McpConfig",
    "McpSkills",
    "RecordStore",
    "ReviewRefused",
    "ReviewService",
    "ReviewerRegistry",
    "WorkflowConfig",
    "build_graph",
    "load_workflow_config",
    "make_finalize_node",
    "make_review_node",
    "validate_case",
]
