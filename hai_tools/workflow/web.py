"""The clinician review web page: reviewers log in, work the queue of cases paused at clinician review, and
approve, edit then approve, or reject each one with a decision signed by their own key.

    python -m hai_tools.workflow --config configs/workflow.yaml serve [--host 127.0.0.1 --port 8770]

Server-rendered (Starlette + Jinja2, autoescaped; nothing from a case is rendered unescaped and the
Content-Security-Policy allows only this server's own script), so reading and navigating work without
JavaScript. A decision is signed either in the browser (WebCrypto Ed25519 with a non-extractable key made on
`/enrol`; the page asks the server for the statement to sign, signs its exact bytes and posts the signature) or,
without JavaScript, with the reviewer's wrapped key held by the server, unwrapped by the passphrase typed into the
decision form for that one decision. The review service verifies the signature against the reviewer registry
either way: this page cannot decide anything a registered reviewer did not sign. Login, sessions, CSRF and the
lock-out: hai_tools.workflow.web_auth.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import re
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, FunctionLoader, select_autoescape
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hai_tools.errors import ConfigError, HaiError
from hai_tools.keys import load_private
from hai_tools.workflow.review import (
    DecisionInput,
    DecisionStatement,
    ReviewRefused,
    verify_release_statement,
    verify_signed_decision,
)
from hai_tools.workflow.service import CaseNotFound, ReviewService
from hai_tools.workflow.web_auth import (
    LOGIN_REFUSED,
    Credentials,
    LockedOut,
    LoginGuard,
    LoginRefused,
    Session,
    SessionStore,
    csrf_ok,
)

log = logging.getLogger("hai_tools.workflow.web")

COOKIE = "hai_review_session"
THREAD = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_FORM_BYTES = 64 * 1024
CSRF_REFUSED = "Refused: the form's security token is missing or out of date. Nothing was changed."
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
SORTS = {
    "waiting": lambda item: item["waiting_seconds"],
    "age": lambda item: item["age_months"],
    "flags": lambda item: len(item["flags"]),
    "model": lambda item: item["model_name"],
}


class SecurityHeaders:
    """Adds the security headers above to every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def _template_source(name: str) -> str:
    return importlib.resources.files("hai_tools.workflow").joinpath("templates", name).read_text()


def model_name(model: Any) -> str:
    if not isinstance(model, dict):
        return "unknown"
    return str(model.get("release") or model.get("base") or model.get("name") or "unknown")


def waiting_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days"


def guard_verdict(flags: list[str]) -> str:
    guard = [f for f in flags if f.startswith("answer flagged by the guard")]
    return "; ".join(guard) if guard else "no flag raised by the guard"


class ReviewWeb:
    def __init__(self, service: ReviewService) -> None:
        web = service.config.web
        self.service = service
        self.sessions = SessionStore(web.session_idle_minutes * 60)
        self.guard = LoginGuard(web.max_failed_logins, web.lockout_minutes * 60, web.lockout_minutes * 60)
        self.credentials = Credentials(service.reviewers, service.config.path(web.keys_dir, "reviewer-keys"))
        self.secure_cookies = web.secure_cookies
        self.env = Environment(
            loader=FunctionLoader(_template_source), autoescape=select_autoescape(default=True)
        )
        self._deciding = asyncio.Lock()  # one decision at a time: a case cannot be decided twice in a race

    # -- plumbing ------------------------------------------------------------------------------------------

    def _session(self, request: Request) -> Session:
        return self.sessions.get(request.cookies.get(COOKIE)) or self.sessions.new()

    def _finish(self, response: Response, session: Session | None) -> Response:
        if session is not None:
            response.set_cookie(
                COOKIE,
                session.id,
                httponly=True,
                samesite="strict",
                secure=self.secure_cookies,
                path="/",
            )
        return response

    def _page(self, name: str, session: Session | None, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(session=session, **context)
        return self._finish(HTMLResponse(html, status_code=status), session)

    def _reviewer(self, request: Request) -> Session | None:
        """The logged-in session, or None; a session whose reviewer was deactivated (or whose key changed)
        since login is ended."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None or session.reviewer_id is None:
            return None
        try:
            entry = self.service.reviewers.active(session.reviewer_id)
        except HaiError:
            entry = None
        if entry is None or entry.key_id != session.reviewer_key_id:
            self.sessions.drop(session.id)
            return None
        return session

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise ReviewRefused("the form is too large")
        form = await request.form(max_files=0, max_fields=16)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _to_login(self) -> Response:
        return RedirectResponse("/login", status_code=303)

    # -- login ---------------------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if self._reviewer(request) is not None:
            return RedirectResponse("/queue", status_code=303)
        return self._page("login.html", self._session(request))

    async def login(self, request: Request) -> Response:
        session = self._session(request)
        try:
            form = await self._form(request)
        except ReviewRefused as exc:
            return self._page("login.html", session, 413, error=f"Refused: {exc}.")
        if not csrf_ok(session, form.get("csrf")):
            return self._page("login.html", session, 403, error=CSRF_REFUSED)
        reviewer_id = form.get("reviewer_id", "").strip()
        nonce, session.nonce = session.nonce, self.sessions.new_nonce()  # each challenge answers once
        try:
            self.guard.check(reviewer_id)
            if form.get("signature"):
                entry = self.credentials.by_signature(reviewer_id, nonce, form["signature"])
                signing = "browser"
            else:
                entry = self.credentials.by_passphrase(reviewer_id, form.get("passphrase", ""))
                signing = "server-key"
        except LockedOut as exc:
            return self._page("login.html", session, 429, error=str(exc), reviewer_id=reviewer_id)
        except LoginRefused:
            self.guard.failed(reviewer_id)
            return self._page("login.html", session, 401, error=LOGIN_REFUSED, reviewer_id=reviewer_id)
        self.guard.succeeded(reviewer_id)
        log.info("review web: reviewer %s logged in (%s)", entry.id, signing)
        return self._finish(
            RedirectResponse("/queue", status_code=303), self.sessions.login(session, entry, signing)
        )

    async def logout(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        try:
            form = await self._form(request)
        except ReviewRefused:
            form = {}
        if session is not None and csrf_ok(session, form.get("csrf")):
            self.sessions.drop(session.id)
        elif session is not None:
            return self._page("message.html", session, 403, title="Refused", message=CSRF_REFUSED)
        return self._finish(self._to_login(), self.sessions.new())

    async def enrol(self, request: Request) -> Response:
        return self._page("enrol.html", self._session(request))

    # -- the queue and a case ------------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        session = self._reviewer(request)
        if session is None:
            return self._to_login()
        sort = request.query_params.get("sort", "waiting")
        sort = sort if sort in SORTS else "waiting"
        order = "asc" if request.query_params.get("order") == "asc" else "desc"
        now = datetime.now(UTC)
        items = []
        for row, payload in await self.service.pending_payloads():
            proposal, case = payload["proposal"], payload["case"]
            waited = (now - datetime.fromisoformat(row["created_at"])).total_seconds()
            items.append(
                {
                    "thread_id": row["thread_id"],
                    "case_id": case["case_id"],
                    "age_months": case["age_months"],
                    "waiting_seconds": waited,
                    "waiting": waiting_text(waited),
                    "submitted_at": row["created_at"],
                    "flags": payload["safety_flags"],
                    "model_name": model_name(proposal.get("model")),
                    "backend": proposal.get("backend") or "",
                }
            )
        items.sort(key=SORTS[sort], reverse=order == "desc")
        return self._page("queue.html", session, items=items, sort=sort, order=order)

    def _case_page(
        self, session: Session, payload: dict[str, Any], status: int = 200, error: str | None = None
    ) -> Response:
        proposal = payload["proposal"]
        model = proposal.get("model") if isinstance(proposal.get("model"), dict) else {}
        return self._page(
            "case.html",
            session,
            status,
            payload=payload,
            case=payload["case"],
            proposal=proposal,
            model=model,
            model_name=model_name(model),
            guard=guard_verdict(payload["safety_flags"]),
            server_key=self.credentials.server_key_path(session.reviewer_id or "") is not None,
            error=error,
        )

    async def case(self, request: Request) -> Response:
        session = self._reviewer(request)
        if session is None:
            return self._to_login()
        thread_id = _thread(request)
        try:
            payload = await self.service.show(thread_id)
        except CaseNotFound:
            if self.service.store.status(thread_id) is not None:  # decided (or erased): the record page says
                return RedirectResponse(f"/cases/{thread_id}/record", status_code=303)
            return self._page("message.html", session, 404, title="No such case", message="No such case.")
        return self._case_page(session, payload)

    # -- decisions -----------------------------------------------------------------------------------------

    async def prepare(self, request: Request) -> Response:
        """For the page's script: the statement the reviewer's browser key signs (JSON in, JSON out)."""
        session = self._reviewer(request)
        if session is None:
            return JSONResponse({"error": "not logged in"}, status_code=401)
        if not csrf_ok(session, request.headers.get("x-csrf-token")):
            return JSONResponse({"error": CSRF_REFUSED}, status_code=403)
        thread_id = _thread(request)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "the request is not a JSON object"}, status_code=400)
        decision = _decision(body, session)
        try:
            statement = await self.service.prepare(thread_id, decision)
        except CaseNotFound as exc:
            return JSONResponse({"error": f"{exc}: nothing was changed"}, status_code=409)
        except ReviewRefused as exc:
            return JSONResponse({"error": f"Refused: {exc}. Nothing was changed."}, status_code=400)
        return JSONResponse({"statement": statement.model_dump(), "payload": statement.payload().decode()})

    async def decide(self, request: Request) -> Response:
        session = self._reviewer(request)
        if session is None:
            return self._to_login()
        thread_id = _thread(request)
        try:
            form = await self._form(request)
        except ReviewRefused as exc:
            return self._page("message.html", session, 413, title="Refused", message=str(exc))
        if not csrf_ok(session, form.get("csrf")):
            return self._page("message.html", session, 403, title="Refused", message=CSRF_REFUSED)
        decision = _decision(form, session)
        async with self._deciding:
            try:
                payload = await self.service.show(thread_id)
            except CaseNotFound:
                return self._page(
                    "message.html",
                    session,
                    409,
                    title="Not waiting for review",
                    message="This case is not waiting for review (it was already decided, or does not exist). "
                    "Nothing was changed.",
                )
            try:
                DecisionInput.model_validate(decision)
            except ValidationError as exc:
                message = (
                    f"Refused: {exc.errors()[0]['msg'].removeprefix('Value error, ')}. Nothing was changed."
                )
                return self._case_page(session, payload, 400, message)
            try:
                if form.get("signature"):
                    record = await self._submit_browser_signed(thread_id, form, decision)
                else:
                    record = await self._decide_with_server_key(thread_id, form, decision, session)
            except ReviewRefused as exc:
                return self._case_page(session, payload, 400, f"Refused: {exc}. Nothing was changed.")
        log.info("review web: case thread %s decided (%s)", thread_id, record["decision"])
        return RedirectResponse(f"/cases/{thread_id}/record", status_code=303)

    async def _submit_browser_signed(
        self, thread_id: str, form: dict[str, str], decision: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            statement = DecisionStatement.model_validate_json(form.get("statement") or "")
        except ValidationError:
            raise ReviewRefused("the signed statement is malformed") from None
        if (statement.thread_id, statement.action, statement.reviewer_id) != (
            thread_id,
            decision["action"],
            decision["reviewer_id"],
        ):
            raise ReviewRefused("the signed statement is not this decision")
        return await self.service.submit(
            statement, form["signature"], decision.get("text"), decision.get("reason")
        )

    async def _decide_with_server_key(
        self, thread_id: str, form: dict[str, str], decision: dict[str, Any], session: Session
    ) -> dict[str, Any]:
        path = self.credentials.server_key_path(session.reviewer_id or "")
        if path is None:
            raise ReviewRefused(
                "this server holds no key of yours: sign in the browser (JavaScript and the key made on the "
                "enrol page), or place your wrapped key in the server's keys folder"
            )
        try:
            key = load_private(path, form.get("passphrase") or None)
        except ConfigError:
            raise ReviewRefused("the passphrase does not unwrap your key") from None
        try:
            return await self.service.decide(thread_id, decision, key)
        finally:
            del key  # used for this one decision

    async def record(self, request: Request) -> Response:
        session = self._reviewer(request)
        if session is None:
            return self._to_login()
        thread_id = _thread(request)
        checks: list[tuple[str, str | None]] = []  # (what, None when it verified, else why not)
        record = None
        try:
            record = self.service.record(thread_id)
            checks.append(("the final record matches its review-chain entry and the service's seal", None))
        except ReviewRefused as exc:
            checks.append(
                ("the final record matches its review-chain entry and the service's seal", str(exc))
            )
        if record is None and not checks[0][1]:
            return RedirectResponse(f"/cases/{thread_id}", status_code=303)
        if record is not None:
            stored = self.service.store.stored_record(thread_id) or {}
            checks.append(
                (
                    "the decision is signed by the reviewer's registered key",
                    _why_not(
                        lambda: verify_signed_decision(
                            record["signed_decision"],
                            self.service.reviewers,
                            thread_id,
                            record["proposal_hash"],
                            stored["salt"],
                            require_active=False,
                        )
                    ),
                )
            )
            checks.append(
                (
                    "the release statement is signed by the review service",
                    _why_not(
                        lambda: verify_release_statement(
                            record["release"], record["release_signature"], self.service.key.public_key()
                        )
                    ),
                )
            )
        chain = _why_not(self.service.verify)
        checks.append(("the review chain verifies from its first entry to its head", chain))
        return self._page("record.html", session, record=record, checks=checks, thread_id=thread_id)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def app(self) -> Starlette:
        static = importlib.resources.files("hai_tools.workflow").joinpath("static")
        routes = [
            Route("/health", self.health),
            Route("/", lambda request: RedirectResponse("/queue", status_code=303)),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/enrol", self.enrol, methods=["GET"]),
            Route("/queue", self.queue, methods=["GET"]),
            Route("/cases/{thread_id}", self.case, methods=["GET"]),
            Route("/cases/{thread_id}/prepare", self.prepare, methods=["POST"]),
            Route("/cases/{thread_id}/decide", self.decide, methods=["POST"]),
            Route("/cases/{thread_id}/record", self.record, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={BadThread: _bad_thread})
        app.add_middleware(SecurityHeaders)
        return app


class BadThread(HaiError):
    """A case address that is not a thread id."""


def _bad_thread(request: Request, exc: Exception) -> Response:
    return HTMLResponse("<!doctype html><title>Not found</title><p>No such case.</p>", status_code=404)


def _thread(request: Request) -> str:
    thread_id = str(request.path_params["thread_id"])
    if not THREAD.match(thread_id):
        raise BadThread("not a thread id")
    return thread_id


def _decision(fields: dict[str, Any], session: Session) -> dict[str, Any]:
    """The decision a form or script asks for, by the logged-in reviewer; empty text or reason is absent."""
    decision: dict[str, Any] = {"action": fields.get("action"), "reviewer_id": session.reviewer_id}
    for name in ("text", "reason"):
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            decision[name] = value.strip()
    if decision["action"] != "edit":
        decision.pop("text", None)
    if decision["action"] != "reject":
        decision.pop("reason", None)
    return decision


def _why_not(check: Any) -> str | None:
    try:
        check()
    except HaiError as exc:
        return str(exc)
    return None


def create_app(service: ReviewService) -> Starlette:
    return ReviewWeb(service).app()
