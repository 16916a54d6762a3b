"""In-process backend (the embedded default): transformers for generation, sentence-transformers for
embeddings. Concurrent embed calls are micro-batched into one forward pass; concurrent generate calls that
arrive while a generation runs are decoded together in the next one (left-padded, greedy; a caller that gives
up stops its own row, and a batch whose callers all gave up stops at its next token)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from hai_tools.manifest import load_manifest
from hai_tools.models import resolve_base_model
from skills.backends.base import BackendUnavailable, RequestRejected, model_capability
from skills.contracts import Backend as BackendName
from skills.contracts import ModelIdentity


def identity_of(model_id: str) -> tuple[str, ModelIdentity]:
    """Resolve a reasoner/embedder id to its folder and identity (an adapter folder loads on its base)."""
    folder = Path(model_id)
    if (folder / "manifest.json").exists():
        manifest = load_manifest(folder)
        if manifest.kind == "adapter":
            base = manifest.input("base_model").name
            return str(folder), ModelIdentity(
                base=base, adapter=manifest.name, manifest_hash=manifest.content_hash
            )
        base_name = next((i.name for i in manifest.inputs if i.kind == "base_model"), manifest.name)
        adapter = next((i.name for i in manifest.inputs if i.kind == "adapter"), None)
        return str(folder), ModelIdentity(
            base=base_name, adapter=adapter, manifest_hash=manifest.content_hash
        )
    ref = resolve_base_model(model_id)
    return ref.path, ModelIdentity(base=ref.id, manifest_hash=ref.identity)


class EmbedBatcher:
    """Concurrent embed calls run as one batch: calls that arrive while a batch runs form the next one (no
    window by default, so a lone call pays no wait; `window_ms` > 0 waits that long for company first)."""

    def __init__(self, encode: Any, window_ms: float = 0.0, max_texts: int = 128) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._encode = encode
        self._window = window_ms / 1000
        self._max = max_texts
        # its own thread: generations waiting for the model hold the event loop's shared worker threads, and an
        # embedding queued behind them waited a minute under load (bench/load.py, 200 clients)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Flush until nothing is pending: calls that arrive during a forward pass join the next batch."""
        while self._pending:
            if sum(len(texts) for texts, _ in self._pending) < self._max:
                await asyncio.sleep(self._window)
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        flat = [text for texts, _ in batch for text in texts]
        try:
            vectors = await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, flat)
        except Exception as exc:  # every waiter of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for texts, future in batch:
            if not future.done():
                future.set_result(vectors[start : start + len(texts)])
            start += len(texts)


class GenerateBatcher:
    """Generation requests that arrive while one runs wait and then run together (up to `max_batch`): no window
    when idle, so a lone call pays nothing; under concurrency the model decodes several rows per step."""

    def __init__(self, run: Any, max_batch: int = 8) -> None:
        self._run = run  # run(list of (messages, max_new_tokens), list of stop events) -> list of texts
        self.max_batch = max_batch
        self._pending: list[tuple[Any, int, asyncio.Future[str], threading.Event]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        stop = threading.Event()
        self._pending.append((messages, max_new_tokens, future, stop))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        try:
            return await future
        except asyncio.CancelledError:  # the router's deadline (or the caller) gave up: stop this row
            stop.set()
            raise

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            live = [item for item in batch if not item[2].done()]
            if not live:
                continue
            try:
                texts = await asyncio.to_thread(
                    self._run, [(m, n) for m, n, _, _ in live], [stop for *_, stop in live]
                )
            except Exception as exc:  # every waiter of the batch gets the failure
                for _, _, future, _ in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future, _), text in zip(live, texts, strict=True):
                if not future.done():
                    future.set_result(text)


class LocalBackend:
    name: BackendName = "local"

    def __init__(self, reasoner: str | None = None, embedder: str | None = None) -> None:
        self._reasoner_id = reasoner
        self._embedder_id = embedder
        # one lock per model: the reasoner's (loading, generation, choice) and the embedder's, so embeddings
        # never wait for a running generation
        self._lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self._lm: Any = None
        self._tokenizer: Any = None
        self._st: Any = None
        self._ids: dict[str, ModelIdentity] = {}
        if reasoner:
            self._reasoner_path, self._ids["generate"] = identity_of(reasoner)
        if embedder:
            self._embedder_path, self._ids["embed"] = identity_of(embedder)
        self._batcher = EmbedBatcher(self._encode)
        self._generator = GenerateBatcher(self._generate_batch_sync)

    def supports(self, capability: str) -> bool:
        return model_capability(capability) in self._ids

    def identity(self, capability: str, adapter: str | None = None) -> ModelIdentity:
        # one model per capability here: a call naming another adapter was refused before it ran
        return self._ids[model_capability(capability)]

    def serves_adapter(self, adapter: str) -> bool:
        return "generate" in self._ids and self._ids["generate"].adapter == adapter

    def load(self) -> None:
        """Load the models now (start-up) rather than on the first call: the embedder first (it loads in a
        fraction of the reasoner's time, so embedding calls are served sooner after a cold start)."""
        if self.supports("embed"):
            self._load_embedder()
        if self.supports("generate"):
            self._load_lm()

    def _load_lm(self) -> None:
        with self._lock:
            if self._lm is not None:
                return
            import torch

            # from the defining modules, not through the package's lazy attributes: a fresh-clone run once saw
            # "cannot import name 'AutoModelForCausalLM' from 'transformers'" here, the mark of a package still
            # initialising in another thread when its lazy attribute is read
            from transformers.models.auto.modeling_auto import AutoModelForCausalLM
            from transformers.models.auto.tokenization_auto import AutoTokenizer

            folder = Path(self._reasoner_path)
            manifest = load_manifest(folder) if (folder / "manifest.json").exists() else None
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if manifest is not None and manifest.kind == "adapter":
                from peft import PeftModel

                base = resolve_base_model(manifest.input("base_model").name)
                model: Any = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
                model = PeftModel.from_pretrained(model, str(folder))
            else:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            self._tokenizer, self._lm = tokenizer, model.eval()

    def _load_embedder(self) -> None:
        with self._embed_lock:
            if self._st is None:
                from sentence_transformers import SentenceTransformer

                from hai_tools.models import EMBED_MAX_TOKENS

                model = SentenceTransformer(self._embedder_path, device="cpu")
                model.max_seq_length = EMBED_MAX_TOKENS  # the window of every backend
                self._st = model

    def _generate_batch_sync(
        self, requests: list[tuple[list[dict[str, str]], int]], stops: list[threading.Event]
    ) -> list[str]:
        """Greedy generation of several chats at once (left-padded) in a worker thread. A row whose caller gave
        up stops at its next token; while it waits for the model (another batch holds it) the thread gives up as
        soon as every caller has, so a call past its deadline frees the model for the next one."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Stopped(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.tensor([stop.is_set() for stop in stops], device=input_ids.device)

        self._load_lm()
        while not self._lock.acquire(timeout=0.05):
            if all(stop.is_set() for stop in stops):
                return [""] * len(requests)
        try:
            if all(stop.is_set() for stop in stops):
                return [""] * len(requests)
            prompts = [
                list(
                    self._tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True)[
                        "input_ids"
                    ]
                )
                for m, _ in requests
            ]
            width = max(map(len, prompts))
            pad = self._tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            with torch.no_grad():
                out = self._lm.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=max(n for _, n in requests),
                    do_sample=False,
                    pad_token_id=pad,
                    stopping_criteria=StoppingCriteriaList([Stopped()]),
                )
            return [
                str(self._tokenizer.decode(out[i, width : width + n], skip_special_tokens=True))
                for i, (_, n) in enumerate(requests)
            ]
        finally:
            self._lock.release()

    def _choose_sync(self, messages: list[dict[str, str]], choices: list[str]) -> dict[str, float]:
        from hai_tools.likelihood import choice_probabilities

        self._load_lm()
        with self._lock:
            probabilities = choice_probabilities(self._lm, self._tokenizer, messages, choices)
        return dict(zip(choices, map(float, probabilities), strict=True))

    def _encode(self, texts: list[str]) -> list[list[float]]:
        self._load_embedder()
        with self._embed_lock:
            # encode sorts by length and pads each chunk to its longest text: chunks of 8 waste little padding on
            # mixed lengths (bench/embed_batching.py: 69 texts/s at 8, 39 at 16 or 64, 64 at 4 on 2 cores)
            vectors = self._st.encode(
                texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )  # no bar: the server logs at INFO, where sentence-transformers draws one on stderr per call
        return [list(map(float, v)) for v in vectors]

    async def generate(
        self, messages: list[dict[str, str]], max_new_tokens: int, adapter: str | None = None
    ) -> str:
        if not self.supports("generate"):
            raise BackendUnavailable("local backend has no reasoner model configured")
        if adapter and adapter != self._ids["generate"].adapter:
            raise RequestRejected(f"local backend does not serve adapter '{adapter}'")
        return await self._generator.generate(messages, max_new_tokens)

    async def choose(self, messages: list[dict[str, str]], choices: list[str]) -> dict[str, float]:
        if not self.supports("choose"):
            raise BackendUnavailable("local backend has no reasoner model configured")
        return await asyncio.to_thread(self._choose_sync, messages, choices)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.supports("embed"):
            raise BackendUnavailable("local backend has no embedder configured")
        return await self._batcher.embed(texts)

    async def health(self) -> bool:
        return bool(self._ids)

    async def close(self) -> None:
        return None
