"""The clinician review web page in a real headless browser: Playwright for Python driving Debian's chromium
(installed by `make test`; no browser is downloaded) against `python -m hai_tools.workflow serve` started on
loopback, over cases paused at clinician review by the real workflow (the MCP server over stdio with the tiny
merged reasoner and the packaged MiniLM). Nothing is mocked.

Covered: a reviewer enrolled in the browser (WebCrypto Ed25519, non-extractable) logs in by signing a challenge,
opens a case, edits the proposal, approves it, and the stored record verifies against the registry; the same
without JavaScript with the server-held key and the passphrase; a rejection without a reason is refused on both
paths; deactivated and locked-out reviewers cannot log in; `<script>` and `<img onerror>` in a case stay inert;
posts without the CSRF token, or for a case already decided, are refused and change nothing; every visible
control is labelled; a replayed login signature is refused; screenshots of the queue and case pages go to out/screenshots/.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hai_tools.keys import load_private
from hai_tools.workflow import ReviewService, load_workflow_config
from hai_tools.workflow.review import verify_signed_decision
from hai_tools.workflow.web_auth import LOGIN_REFUSED
from tests.conftest import (
    REVIEWER_PASSPHRASE,
    free_port,
    make_reviewer,
    tiny_server_config,
    wait_for_http,
    write_workflow_config,
)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "out" / "screenshots"
XSS = (
    "Says two words.<script>document.title='pwned';alert('xss')</script>"
    "<img src=/pwned-img onerror=\"fetch('/pwned-fetch');alert('img')\">"
)
CASES = {
    "edit": {"case_id": "web-0001", "age_months": 18, "observations": "Does not walk; says no words."},
    "reject": {"case_id": "web-0002", "age_months": 30, "observations": "No two-word phrases; runs well."},
    "xss": {"case_id": "web-0003", "age_months": 24, "observations": XSS},
    "csrf": {"case_id": "web-0004", "age_months": 12, "observations": "Pulls to stand; babbles."},
}
EDITED = "Refer for a full developmental evaluation; review hearing first."


def chromium() -> str:
    path = os.environ.get("HAI_CHROMIUM") or shutil.which("chromium")
    assert path, "Debian's chromium is not installed: `make test` installs it (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def web(
    merged_tiny: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("review-web")
    server = tiny_server_config(
        base / "server.yaml",
        merged_tiny,
    )
    port = free_port()
    config = write_workflow_config(
        base,
        mcp={"transport": "stdio", "server_config": str(server)},
        web={"keys_dir": str(base / "profiles"), "port": port, "max_failed_logins": 3},
    )
    for reviewer in ("dr-lee", "dr-gone", "dr-lock"):
        make_reviewer(base, reviewer, "pediatrician")
    env = {**server_env, "HAI_WORKFLOW_CONFIG": str(config)}
    service = ReviewService(load_workflow_config(config), env=env)

    async def start_all() -> dict[str, str]:
        return {name: (await service.start(case))["thread_id"] for name, case in CASES.items()}

    threads = asyncio.run(start_all())
    log = base / "web.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hai_tools.workflow", "serve"],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=handle,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, log, timeout_s=120)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            yield {
                "url": url,
                "base": base,
                "config": config,
                "env": env,
                "threads": threads,
                "browser": browser,
                "log": log,
            }
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _service(web: dict[str, Any]) -> ReviewService:
    return ReviewService(load_workflow_config(web["config"]), env=web["env"])


def _pending(web: dict[str, Any], name: str) -> dict[str, Any]:
    """Raises CaseNotFound unless the case still waits for review. (On a thread of its own: Playwright's sync
    API keeps an event loop running on this one.)"""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _service(web).show(web["threads"][name])).result()


def _chain(web: dict[str, Any]) -> list[dict[str, Any]]:
    return _service(web).store.chain()


def _passphrase_login(page: Any, url: str, reviewer: str, passphrase: str = REVIEWER_PASSPHRASE) -> None:
    """Logs in by keyboard alone: type the id, Tab to the passphrase, Enter."""
    page.goto(f"{url}/login")
    page.get_by_label("Reviewer id").focus()
    page.keyboard.type(reviewer)
    page.keyboard.press("Tab")
    page.keyboard.type(passphrase)
    with page.expect_navigation():
        page.keyboard.press("Enter")


def _browser_key_reviewer(web: dict[str, Any], page: Any, reviewer: str) -> None:
    """Enrol `reviewer` in this browser (/enrol) and register the public key it shows, as the admin does."""
    from hai_tools.workflow.reviewers import ReviewerRegistry

    page.goto(f"{web['url']}/enrol")
    page.get_by_label("Reviewer id").fill(reviewer)
    page.get_by_role("button", name="Create a key in this browser").click()
    public = page.locator("#enrol-public")
    public.wait_for(state="visible")
    registry = ReviewerRegistry(web["base"] / "reviewers.yaml", web["base"] / "admin.pub")
    entry = registry.add(
        reviewer, "pediatrician", public.input_value(), load_private(web["base"] / "admin.key")
    )
    assert page.locator("#enrol-key-id").text_content() == entry.key_id


def test_browser_key_login_edit_approve_and_the_record_verifies(web: dict[str, Any]) -> None:
    context = web["browser"].new_context()
    page = context.new_page()
    _browser_key_reviewer(web, page, "dr-web")
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.post_data or "") if r.method == "POST" else None)
    page.goto(f"{web['url']}/login")
    page.get_by_label("Reviewer id").fill("dr-web")
    page.get_by_role("button", name="Log in").click()  # no passphrase: the browser key signs the challenge
    page.wait_for_url(f"{web['url']}/queue")
    assert page.get_by_text("Signed in as").is_visible()

    rows = page.locator("#queue tbody tr")
    assert rows.count() == len(CASES)
    page.get_by_role("link", name="Child's age (months)").click()
    ages = [int(a) for a in page.locator("#queue tbody tr td:nth-child(2)").all_text_contents()]
    assert ages == sorted(ages, reverse=True)
    page.get_by_role("link", name="Child's age (months)").click()
    ages = [int(a) for a in page.locator("#queue tbody tr td:nth-child(2)").all_text_contents()]
    assert ages == sorted(ages)
    assert page.locator("th[aria-sort='ascending']").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "review-queue.png"), full_page=True)

    page.get_by_role("link", name=CASES["edit"]["case_id"]).click()
    page.wait_for_selector("body[data-signing-ready='browser']")
    for section in ("Observations", "Proposal", "Rationale", "Evidence passages", "Model and release"):
        assert page.get_by_role("heading", name=section).is_visible()
    assert page.locator("#observations").text_content() == CASES["edit"]["observations"]
    assert "Decision support only" in page.locator("#disclaimer").text_content()
    assert page.locator("form.decision .passphrase").first.is_hidden()  # the browser key signs
    page.screenshot(path=str(SCREENSHOTS / "review-case.png"), full_page=True)

    page.get_by_label("Edited text").fill(EDITED)
    page.get_by_role("button", name="Approve the edited text").click()
    page.wait_for_function(
        "() => location.pathname.endsWith('/record') || !document.getElementById('decision-error').hidden"
    )
    assert page.url == f"{web['url']}/cases/{web['threads']['edit']}/record", (
        page.locator("#decision-error").text_content(),
        web["log"].read_text()[-2000:],
    )
    assert page.locator("#record-decision").text_content() == "edit"
    assert page.locator("#record-released").text_content() == EDITED
    checks = page.locator("#verification li")
    assert checks.count() == 4 and page.locator("#verification li.failed").count() == 0

    service = _service(web)
    thread = web["threads"]["edit"]
    record = service.record(thread)
    assert record is not None
    assert (record["decision"], record["released_text"], record["reviewer_id"]) == ("edit", EDITED, "dr-web")
    stored = service.store.stored_record(thread)
    assert stored is not None
    verify_signed_decision(
        record["signed_decision"],
        service.reviewers,
        thread,
        record["proposal_hash"],
        stored["salt"],
        require_active=False,
    )
    service.verify()
    # the private key cannot be read out of the browser, and nothing posted carried one
    exported = page.evaluate(
        """async () => {
            const db = await new Promise((ok) => { const r = indexedDB.open('hai-tools-review', 1);
                r.onsuccess = () => ok(r.result); });
            const entry = await new Promise((ok) => { const r = db.transaction('keys').objectStore('keys')
                .get('dr-web'); r.onsuccess = () => ok(r.result); });
            try { await crypto.subtle.exportKey('pkcs8', entry.privateKey); return 'exported'; }
            catch (err) { return err.name; }
        }"""
    )
    assert exported == "InvalidAccessError"
    assert posted and not any("PRIVATE" in body or "pkcs8" in body for body in posted)
    context.close()

    # a signed login challenge answers once: replayed into another session it is refused
    from urllib.parse import parse_qs

    login = parse_qs(posted[0])
    assert login["signature"][0] and login["reviewer_id"] == ["dr-web"]
    other = web["browser"].new_context(java_script_enabled=False)
    page = other.new_page()
    page.goto(f"{web['url']}/login")
    csrf = page.locator("input[name=csrf]").get_attribute("value")
    answer = other.request.post(
        f"{web['url']}/login",
        form={"csrf": csrf, "reviewer_id": "dr-web", "signature": login["signature"][0]},
        max_redirects=0,
    )
    assert answer.status == 401 and "Login refused" in answer.text()
    assert "challenge signature is not by the registered key" in web["log"].read_text()
    other.close()


def test_a_rejection_without_a_reason_is_refused_with_and_without_javascript(web: dict[str, Any]) -> None:
    thread = web["threads"]["reject"]
    context = web["browser"].new_context()
    page = context.new_page()
    _browser_key_reviewer(web, page, "dr-js")
    page.goto(f"{web['url']}/login")
    page.get_by_label("Reviewer id").fill("dr-js")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{web['url']}/queue")
    page.goto(f"{web['url']}/cases/{thread}")
    page.wait_for_selector("body[data-signing-ready='browser']")
    page.get_by_role("button", name="Reject").click()
    alert = page.locator("#decision-error")
    alert.wait_for(state="visible")
    assert "a rejection needs a reason" in alert.text_content()
    assert _pending(web, "reject")["thread_id"] == thread and _service(web).record(thread) is None
    context.close()

    plain = web["browser"].new_context(java_script_enabled=False)
    page = plain.new_page()
    _passphrase_login(page, web["url"], "dr-lee")
    assert page.url == f"{web['url']}/queue"
    page.get_by_role("link", name=CASES["reject"]["case_id"]).click()
    assert page.locator("#observations").text_content() == CASES["reject"]["observations"]
    page.locator("#reject-passphrase").fill(REVIEWER_PASSPHRASE)
    page.get_by_role("button", name="Reject").click()
    assert "a rejection needs a reason" in page.locator("#decision-error").text_content()
    assert _service(web).record(thread) is None

    page.get_by_label("Reason for rejecting").fill("Observations too sparse to screen; re-examine.")
    page.locator("#reject-passphrase").fill("not the passphrase")
    page.get_by_role("button", name="Reject").click()
    assert "the passphrase does not unwrap your key" in page.locator("#decision-error").text_content()
    assert _service(web).record(thread) is None

    page.get_by_label("Reason for rejecting").fill("Observations too sparse to screen; re-examine.")
    page.locator("#reject-passphrase").fill(REVIEWER_PASSPHRASE)
    page.get_by_role("button", name="Reject").click()
    assert page.url == f"{web['url']}/cases/{thread}/record"
    assert page.locator("#record-decision").text_content() == "reject"
    assert page.locator("#record-released").text_content() == "nothing released"
    assert page.locator("#verification li.failed").count() == 0
    record = _service(web).record(thread)
    assert record is not None and record["reviewer_id"] == "dr-lee" and record["released_text"] is None
    plain.close()


def test_logout_and_deactivated_and_locked_out_reviewers(web: dict[str, Any]) -> None:
    from hai_tools.workflow.reviewers import ReviewerRegistry

    context = web["browser"].new_context(java_script_enabled=False)
    page = context.new_page()
    _passphrase_login(page, web["url"], "dr-gone")
    assert page.url == f"{web['url']}/queue"  # the same credentials work while the reviewer is active
    session = next(c for c in context.cookies() if c["name"] == "hai_review_session")
    page.get_by_role("button", name="Log out").click()
    assert page.url == f"{web['url']}/login"
    old = web["browser"].new_context(java_script_enabled=False)  # the logged-out session cookie, replayed
    old.add_cookies([session])
    replayed = old.new_page()
    replayed.goto(f"{web['url']}/queue")
    assert replayed.url == f"{web['url']}/login"
    old.close()
    _passphrase_login(page, web["url"], "dr-gone")
    assert page.url == f"{web['url']}/queue"
    registry = ReviewerRegistry(web["base"] / "reviewers.yaml", web["base"] / "admin.pub")
    registry.deactivate("dr-gone", load_private(web["base"] / "admin.key"))
    page.goto(f"{web['url']}/queue")
    assert page.url == f"{web['url']}/login"  # the open session ended with the key
    _passphrase_login(page, web["url"], "dr-gone")
    assert page.url == f"{web['url']}/login"
    assert page.get_by_role("alert").text_content() == LOGIN_REFUSED
    assert "no active registered key" in web["log"].read_text()

    for _ in range(3):  # max_failed_logins: 3
        _passphrase_login(page, web["url"], "dr-lock", "wrong passphrase")
        assert page.get_by_role("alert").text_content() == LOGIN_REFUSED
    _passphrase_login(page, web["url"], "dr-lock")  # the right passphrase, locked out
    assert page.url == f"{web['url']}/login"
    assert "Too many failed logins" in page.get_by_role("alert").text_content()
    context.close()


def test_script_and_onerror_payloads_in_a_case_stay_inert(web: dict[str, Any]) -> None:
    context = web["browser"].new_context()
    page = context.new_page()
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    _passphrase_login(page, web["url"], "dr-lee")
    assert page.url == f"{web['url']}/queue"
    page.get_by_role("link", name=CASES["xss"]["case_id"]).click()
    page.wait_for_selector("body[data-signing-ready]")
    page.wait_for_timeout(500)
    assert page.locator("#observations").text_content() == XSS  # shown as text
    assert page.locator("#observations script, #observations img").count() == 0
    assert dialogs == []
    assert not [u for u in requests if "pwned" in u], requests
    assert page.title() != "pwned"
    context.close()


def test_csrf_less_posts_and_decisions_on_decided_cases_change_nothing(web: dict[str, Any]) -> None:
    context = web["browser"].new_context(java_script_enabled=False)
    page = context.new_page()
    _passphrase_login(page, web["url"], "dr-lee")
    thread = web["threads"]["csrf"]
    decide = f"{web['url']}/cases/{thread}/decide"
    before = _chain(web)
    for form in (
        {"action": "approve", "passphrase": REVIEWER_PASSPHRASE},
        {"action": "approve", "passphrase": REVIEWER_PASSPHRASE, "csrf": "forged"},
    ):
        answer = context.request.post(decide, form=form)
        assert answer.status == 403 and "security token" in answer.text()
    answer = context.request.post(
        f"{web['url']}/cases/{thread}/prepare", data={"action": "approve"}, headers={}
    )
    assert answer.status == 403
    oversized = {"action": "edit", "text": "x" * 70_000, "passphrase": REVIEWER_PASSPHRASE}
    for url in (decide, f"{web['url']}/login"):  # above the 64 KiB form limit: refused before it is read
        answer = context.request.post(url, form=oversized)
        assert answer.status == 413 and "the form is too large" in answer.text()
    assert _pending(web, "csrf")["thread_id"] == thread
    assert _service(web).record(thread) is None and _chain(web) == before

    page.goto(f"{web['url']}/cases/{thread}")
    csrf = page.locator("#approve-form input[name=csrf]").get_attribute("value")
    labelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
                .filter((el) => el.labels.length === 0).map((el) => el.name)"""
    )
    assert labelled == []
    page.locator("#approve-passphrase").fill(REVIEWER_PASSPHRASE)
    page.get_by_role("button", name="Approve the proposal as it stands").click()
    assert page.url == f"{web['url']}/cases/{thread}/record"
    record = _service(web).record(thread)
    chain = _chain(web)
    assert record is not None and len(chain) == len(before) + 1

    answer = context.request.post(
        decide, form={"action": "reject", "reason": "again", "passphrase": REVIEWER_PASSPHRASE, "csrf": csrf}
    )
    assert answer.status == 409 and "not waiting for review" in answer.text()
    assert _service(web).record(thread) == record and _chain(web) == chain
    context.close()
