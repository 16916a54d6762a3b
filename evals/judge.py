"""The LLM-eval judge: local and offline by default, any OpenAI-compatible endpoint when configured.

deepeval and ragas ask their judge for pydantic-shaped answers (`generate(prompt, schema)`). A small local
model does not reliably write valid JSON, so the local judge *decodes into the schema*: it walks the
schema's JSON layout, writes the structure itself and lets the model choose only the values: free text
(greedy, up to the closing quote), a literal/boolean/integer by the likelihood of each allowed value, a
float as the probability-weighted mean of the allowed values (G-Eval's scoring), a list's length by the
likelihood of closing it. The answer always validates. An OpenAI-compatible judge (vLLM serving the
ReasonerSkill's model, or any other) gets the same schema as `response_format` (vLLM enforces it).
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools.errors import ConfigError, HaiError

T = TypeVar("T", bound=BaseModel)
# offline and telemetry off whichever way the suites are started (the Makefile sets the same): deepeval
# and ragas read these when they are first imported, which happens lazily below
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
os.environ.setdefault("DEEPEVAL_DISABLE_DOTENV", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")


class JudgeError(HaiError):
    """The judge could not answer in the requested schema."""


class JudgeConfig(BaseModel):
    """`local`: a model folder or embedded id run in-process. `openai`: an OpenAI-compatible endpoint whose
    API key is read from the environment variable `api_key_env` (never from the file)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "openai"] = "local"
    model: str = "embedded:gemma-3-270m"
    base_url: str | None = None
    api_key_env: str | None = None
    max_string_tokens: int = Field(default=48, ge=1, le=512)
    max_list_items: int = Field(default=4, ge=1, le=32)
    timeout_s: float = Field(default=120.0, gt=0)
    structured_output: Literal["response_format", "prompt"] = Field(
        default="response_format",
        description="openai: send the schema as response_format (vLLM enforces it), or, for a server without "
        "structured output, state it in the prompt; either way the answer is validated against the schema",
    )


class Judge(Protocol):
    name: str

    def structured(self, prompt: str, schema: type[T]) -> T: ...


def make_judge(config: JudgeConfig) -> Judge:
    if config.kind == "openai":
        if not config.base_url:
            raise ConfigError("an openai judge needs base_url")
        return OpenAIJudge(config)
    return LocalJudge(config)


class LocalJudge:
    """Schema-guided greedy decoding on a local causal LM with one KV cache per answer."""

    def __init__(self, config: JudgeConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from hai_tools.models import resolve_base_model

        folder = Path(config.model)
        path = folder if folder.is_dir() else Path(resolve_base_model(config.model).path)
        self.name = f"local:{config.model}"
        self._config = config
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self._lock = threading.Lock()
        # tokens a JSON string value may not contain: specials, quotes, backslashes, newlines, raw bytes
        vocab = self._model.config.get_text_config().vocab_size
        pieces = self._tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(self._tokenizer)))))
        special = set(self._tokenizer.all_special_ids)
        self._text_mask = torch.ones(vocab, dtype=torch.bool)
        self._text_mask[: len(pieces)] = torch.tensor(
            [
                i in special
                or not p
                or any(c in p for c in '"\\\n')
                or (p.startswith("<") and p.endswith(">"))
                for i, p in enumerate(pieces)
            ]
        )

    def structured(self, prompt: str, schema: type[T]) -> T:
        with self._lock:
            return _GuidedDecode(self, prompt, schema).run()


def judge_prompt_text(tokenizer: Any, prompt: str) -> str:
    """The text the judge's answer continues: the prompt asking for one JSON object, in the chat template."""
    instruction = f"{prompt}\n\nAnswer with one JSON object only."
    if tokenizer.chat_template:
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
            )
        )
    return instruction + "\n"


class _GuidedDecode:
    def __init__(self, judge: LocalJudge, prompt: str, schema: type[BaseModel]) -> None:
        self.judge, self.schema = judge, schema
        self.json_schema = schema.model_json_schema()
        text = judge_prompt_text(judge._tokenizer, prompt)
        self.cache: Any = None
        self.logits: Any = None
        self._feed(self._ids(text))

    def _feed(self, ids: list[int]) -> None:
        import torch

        with torch.no_grad():
            out = self.judge._model(input_ids=torch.tensor([ids]), cache=self.cache, use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[0, -1].float()

    def _ids(self, text: str) -> list[int]:
        return list(self.judge._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _literal(self, text: str) -> None:
        self._feed(self._ids(text))

    def _choose(self, options: list[str]) -> tuple[int, list[float]]:
        """Log-likelihood of each option as the continuation; feeds the best one."""
        import torch

        scores: list[float] = []
        first = torch.log_softmax(self.logits, -1)
        for option in options:
            ids = self._ids(option)
            score = float(first[ids[0]])
            if len(ids) > 1:
                with torch.no_grad():
                    out = self.judge._model(
                        input_ids=torch.tensor([ids[:-1]]),
                        cache=copy.deepcopy(self.cache),
                        use_cache=True,
                    )
                logp = torch.log_softmax(out.logits[0].float(), -1)
                score += float(sum(logp[i, ids[i + 1]] for i in range(len(ids) - 1)))
            scores.append(score)
        best = max(range(len(options)), key=lambda i: scores[i])
        self._literal(options[best])
        return best, scores

    def _string(self) -> str:
        import torch

        self._literal('"')
        pieces: list[int] = []
        for _ in range(self.judge._config.max_string_tokens):
            masked = self.logits.masked_fill(self.judge._text_mask[: self.logits.numel()], -torch.inf)
            token = int(torch.argmax(masked))
            if float(torch.softmax(self.logits, -1)[~self.judge._text_mask].sum()) < 0.05 and pieces:
                break  # the model wants to close the string (or end): stop here
            pieces.append(token)
            self._feed([token])
            if len(pieces) >= 4 and str(self.judge._tokenizer.decode([token])).rstrip().endswith(
                (".", "?", "!")
            ):
                break  # one sentence per value: reasons, statements and questions are sentences
        self._literal('"')
        return str(self.judge._tokenizer.decode(pieces)).strip()

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return dict(self.json_schema["$defs"][node["$ref"].split("/")[-1]])
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            return self._resolve(options[0])
        return node

    def _value(self, node: dict[str, Any]) -> Any:
        import torch

        node = self._resolve(node)
        if "enum" in node or "const" in node:
            values = node.get("enum", [node.get("const")])
            best, _ = self._choose([json.dumps(v) for v in values])
            return values[best]
        kind = node.get("type")
        if kind == "object":
            result: dict[str, Any] = {}
            self._literal("{")
            for i, (name, child) in enumerate(node.get("properties", {}).items()):
                self._literal(("" if i == 0 else ", ") + json.dumps(name) + ": ")
                result[name] = self._value(child)
            self._literal("}")
            return result
        if kind == "array":
            items: list[Any] = []
            self._literal("[")
            child = self._resolve(node.get("items", {"type": "string"}))
            opener = '"' if child.get("type") == "string" else "{" if child.get("type") == "object" else ""
            while len(items) < self.judge._config.max_list_items:
                if items or opener:
                    ends = ["]", ", "] if items else ["]", opener]
                    best, _ = self._choose_peek(ends)
                    if best == 0:
                        break
                    if items:
                        self._literal(", ")
                items.append(self._value(child))
            self._literal("]")
            return items
        if kind == "string":
            return self._string()
        if kind == "boolean":
            best, _ = self._choose(["true", "false"])
            return best == 0
        if kind in ("integer", "number"):
            values = _numeric_candidates(node)
            best, scores = self._choose([str(v) for v in values])
            if kind == "integer":
                return values[best]
            weights = torch.softmax(torch.tensor(scores), -1)
            return float(sum(w * v for w, v in zip(weights.tolist(), values, strict=True)))
        return self._string()

    def _choose_peek(self, options: list[str]) -> tuple[int, list[float]]:
        """Like _choose for the first token of each option, without feeding anything."""
        import torch

        logp = torch.log_softmax(self.logits, -1)
        scores = [float(logp[self._ids(o)[0]]) for o in options]
        return max(range(len(options)), key=lambda i: scores[i]), scores

    def run(self) -> Any:
        value = self._value(self.json_schema)
        try:
            return self.schema.model_validate(value)
        except ValidationError as exc:  # a schema feature the decoder does not cover
            raise JudgeError(f"judge answer does not fit {self.schema.__name__}: {exc.errors()[0]}") from None


def _numeric_candidates(node: dict[str, Any]) -> list[int]:
    """The values a number may take: the schema's bounds when narrow, {0, 1} when the description only
    speaks of 0 and 1 (ragas' verdicts), else the 0-10 scale of deepeval's scores."""
    low, high = node.get("minimum"), node.get("maximum")
    if isinstance(low, int) and isinstance(high, int) and 0 <= high - low <= 20:
        return list(range(low, high + 1))
    if set(re.findall(r"\d+", str(node.get("description", "")))) == {"0", "1"}:
        return [0, 1]
    return list(range(11))


class OpenAIJudge:
    """Chat completions with the schema as `response_format` (enforced by vLLM's guided decoding)."""

    def __init__(self, config: JudgeConfig) -> None:
        import httpx

        self.name = f"openai:{config.model}@{config.base_url}"
        headers = {}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(f"judge API key variable {config.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._config = config
        self._client = httpx.Client(
            base_url=str(config.base_url).rstrip("/"), headers=headers, timeout=config.timeout_s
        )

    def structured(self, prompt: str, schema: type[T]) -> T:
        import httpx

        payload: dict[str, Any] = {
            "model": self._config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 1024,
        }
        if self._config.structured_output == "response_format":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
            }
        else:
            shape = json.dumps(schema.model_json_schema())
            payload["messages"][0]["content"] = (
                f"{prompt}\n\nAnswer with one JSON object of this schema: {shape}"
            )
        try:
            response = self._client.post("/chat/completions", json=payload)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except httpx.HTTPStatusError as exc:
            detail = exc.response.text[:200].replace("\n", " ")
            raise JudgeError(
                f"judge endpoint {self._config.base_url} refused the request "
                f"(HTTP {exc.response.status_code}): {detail}"
            ) from None
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise JudgeError(f"judge endpoint {self._config.base_url} failed: {exc}") from None
        try:
            return schema.model_validate_json(_json_object(content))
        except ValidationError as exc:
            raise JudgeError(
                f"judge endpoint answered outside the {schema.__name__} schema: {exc.errors()[0]['msg']}"
            ) from None


def _json_object(text: str) -> str:
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


# --- adapters for the two eval libraries ---------------------------------------------------------


def deepeval_model(judge: Judge) -> Any:
    from deepeval.models import DeepEvalBaseLLM

    class HaiJudge(DeepEvalBaseLLM):  # type: ignore[misc]
        def __init__(self) -> None:
            self.judge = judge
            super().__init__(judge.name)

        def load_model(self, *args: Any, **kwargs: Any) -> Any:
            return judge

        def generate(self, prompt: str, schema: type[BaseModel] | None = None) -> Any:
            if schema is None:
                return self.judge.structured(prompt, _Text).text
            return self.judge.structured(prompt, schema)

        async def a_generate(self, prompt: str, schema: type[BaseModel] | None = None) -> Any:
            return self.generate(prompt, schema)

        def get_model_name(self) -> str:
            return self.judge.name

    return HaiJudge()


class _Text(BaseModel):
    text: str


def ragas_llm(judge: Judge) -> Any:
    from ragas.llms.base import InstructorBaseRagasLLM

    class HaiRagasJudge(InstructorBaseRagasLLM):
        def generate(self, prompt: str, response_model: type[T]) -> T:
            return judge.structured(prompt, response_model)

        async def agenerate(self, prompt: str, response_model: type[T]) -> T:
            return judge.structured(prompt, response_model)

    return HaiRagasJudge()


def ragas_embeddings(embed: Any) -> Any:
    """ragas' embedding interface over a sync `embed(list[str]) -> list[list[float]]` (the EmbedSkill)."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class EmbedSkillEmbeddings(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return list(embed([text])[0])

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return list(embed([text])[0])

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return [list(v) for v in embed(list(texts))]

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return [list(v) for v in embed(list(texts))]

    return EmbedSkillEmbeddings()
