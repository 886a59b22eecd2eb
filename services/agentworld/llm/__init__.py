"""LLM layer for the synthesis pipeline: Anthropic and OpenAI(-compatible) providers, retries, cache, costs."""

from agentworld.llm.accounting import Accounting, StageStats
from agentworld.llm.client import LLMClient
from agentworld.llm.errors import LLMConfigError, LLMError, LLMParseError, LLMRequestError
from agentworld.llm.jsonparse import extract_code, parse_json_object
from agentworld.llm.prices import DEFAULT_PRICES, Price, PriceTable
from agentworld.llm.retry import RetryPolicy
from agentworld.llm.spec import LLMSpec, parse_llm_spec
from agentworld.llm.types import Completion, LLMRequest

__all__ = [
    "DEFAULT_PRICES",
    "Accounting",
    "Completion",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMParseError",
    "LLMRequest",
    "LLMRequestError",
    "LLMSpec",
    "Price",
    "PriceTable",
    "RetryPolicy",
    "StageStats",
    "extract_code",
    "parse_json_object",
    "parse_llm_spec",
]
