"""Tests for the fake OpenAI-compatible server, driven through real clients over real HTTP."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from continuations_core.testing.fake_openai import FakeOpenAIServer, Reply, ToolCall

WEATHER_ARGS: dict[str, Any] = {"city": "Paris", "days": 3, "units": {"temp": "C"}}
WEATHER_CALL = ToolCall(id="call_weather_1", name="get_weather", arguments=WEATHER_ARGS)
TIME_CALL = ToolCall(id="call_time_2", name="get_time", arguments={"tz": "Europe/Paris"})

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    for name in ("get_weather", "get_time")
]


def _has_tool_result(body: dict[str, Any]) -> bool:
    return any(message.get("role") == "tool" for message in body["messages"])


def _tool_then_text(call: ToolCall, text: str):
    """Script: call ``call`` first; once a tool result is in the conversation, say ``text``."""

    def responder(body: dict[str, Any]) -> Reply:
        return Reply.say(text) if _has_tool_result(body) else Reply.call(call)

    return responder


def _client(server: FakeOpenAIServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)


def test_binds_only_to_loopback_on_an_os_chosen_port():
    """The server listens on 127.0.0.1 at a non-zero OS-chosen port and stops listening on exit."""
    with FakeOpenAIServer(lambda body: Reply.say("hi")) as server:
        url = urlsplit(server.base_url)
        assert url.scheme == "http"
        assert url.hostname == "127.0.0.1"
        assert url.path == "/v1"
        assert url.port is not None and url.port > 0
        port = url.port
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError):
        _ = server.base_url


async def test_non_streaming_tool_call_arguments_are_a_json_string():
    """A non-streaming completion returns scripted tool calls whose arguments are a JSON string."""
    messages = [{"role": "user", "content": "Weather and time in Paris?"}]
    with FakeOpenAIServer(lambda body: Reply.call(WEATHER_CALL, TIME_CALL)) as server:
        async with _client(server) as client:
            response = await client.chat.completions.create(
                model="gpt-4o", messages=messages, tools=TOOLS
            )

    assert response.id == "chatcmpl-1"
    assert response.object == "chat.completion"
    assert response.model == "gpt-4o"
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None
    assert [(c.id, c.type, c.function.name) for c in calls] == [
        ("call_weather_1", "function", "get_weather"),
        ("call_time_2", "function", "get_time"),
    ]
    assert isinstance(calls[0].function.arguments, str)
    assert json.loads(calls[0].function.arguments) == WEATHER_ARGS
    assert json.loads(calls[1].function.arguments) == {"tz": "Europe/Paris"}
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (10, 5)
    assert response.usage.total_tokens == 15
    assert [body["messages"] for body in server.requests] == [messages]
    assert server.requests[0]["tools"] == TOOLS
    assert server.errors == []


async def test_non_streaming_text_reply_and_request_recording():
    """A non-streaming text reply comes through and each request body is recorded in order."""
    seen: list[str] = []

    def responder(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        seen.append(prompt)
        return Reply(text=f"echo: {prompt}", prompt_tokens=7, completion_tokens=2)

    with FakeOpenAIServer(responder) as server:
        async with _client(server) as client:
            first = await client.chat.completions.create(
                model="m1", messages=[{"role": "user", "content": "one"}]
            )
            second = await client.chat.completions.create(
                model="m2", messages=[{"role": "user", "content": "two"}]
            )

    assert first.choices[0].message.content == "echo: one"
    assert first.choices[0].message.tool_calls is None
    assert first.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "echo: two"
    assert (first.id, second.id) == ("chatcmpl-1", "chatcmpl-2")
    assert (first.model, second.model) == ("m1", "m2")
    assert second.usage is not None and second.usage.total_tokens == 9
    assert seen == ["one", "two"]
    assert [body["model"] for body in server.requests] == ["m1", "m2"]
    assert [body["messages"][0]["content"] for body in server.requests] == ["one", "two"]
    assert server.errors == []


async def test_streaming_accumulates_text_and_tool_call_arguments():
    """Streamed text and split tool-call argument deltas accumulate to the scripted values."""
    reply = Reply(text="Checking both now.", tool_calls=(WEATHER_CALL, TIME_CALL))
    messages = [{"role": "user", "content": "Weather and time in Paris?"}]
    with FakeOpenAIServer(lambda body: reply) as server:
        async with _client(server) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=messages,
                tools=TOOLS,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]

    text_pieces: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    argument_pieces: dict[int, int] = {}
    finish_reasons: list[str] = []
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.id == "chatcmpl-1"
        for choice in chunk.choices:
            if choice.delta.content:
                text_pieces.append(choice.delta.content)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
                    argument_pieces[delta.index] = argument_pieces.get(delta.index, 0) + 1
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(text_pieces) == "Checking both now."
    assert len(text_pieces) >= 2
    assert finish_reasons == ["tool_calls"]
    assert sorted(calls) == [0, 1]
    assert (calls[0]["id"], calls[0]["name"]) == ("call_weather_1", "get_weather")
    assert (calls[1]["id"], calls[1]["name"]) == ("call_time_2", "get_time")
    assert json.loads(calls[0]["arguments"]) == WEATHER_ARGS
    assert json.loads(calls[1]["arguments"]) == {"tz": "Europe/Paris"}
    assert argument_pieces == {0: 2, 1: 2}
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None and (usage.prompt_tokens, usage.total_tokens) == (10, 15)
    assert server.requests[0]["stream"] is True
    assert server.requests[0]["messages"] == messages
    assert server.errors == []


async def test_streaming_text_without_usage_option_has_no_usage_chunk():
    """Without stream_options.include_usage, the stream ends at the finish chunk with no usage."""
    with FakeOpenAIServer(lambda body: Reply.say("Hello there")) as server:
        async with _client(server) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    assert server.errors == []


async def test_responder_exception_becomes_a_recorded_500_without_sdk_retries():
    """A raising responder yields one HTTP 500 the SDK surfaces, recorded in server.errors."""

    def responder(body: dict[str, Any]) -> Reply:
        raise ValueError("no script for this request")

    with FakeOpenAIServer(responder) as server:
        # Default retries on: the 500 tells the SDK not to retry, so only one request arrives.
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test") as client:
            with pytest.raises(openai.InternalServerError) as raised:
                await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )

    assert raised.value.status_code == 500
    assert "no script for this request" in str(raised.value)
    assert len(server.requests) == 1
    assert len(server.errors) == 1
    assert "ValueError: no script for this request" in server.errors[0]


async def test_models_endpoint_lists_a_model():
    """GET /v1/models returns a model list the SDK parses."""
    with FakeOpenAIServer(lambda body: Reply.say("unused")) as server:
        async with _client(server) as client:
            models = [model.id async for model in client.models.list()]

    assert models == ["fake-model"]
    assert server.requests == []
    assert server.errors == []


async def test_pydantic_ai_openai_chat_model_round_trips_a_tool_call():
    """Pydantic AI's real OpenAIChatModel runs the scripted tool once and returns the final text."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    tool_inputs: list[dict[str, Any]] = []
    call = ToolCall(id="call_pai_1", name="get_weather", arguments={"city": "Paris", "days": 3})

    with FakeOpenAIServer(_tool_then_text(call, "It is sunny in Paris.")) as server:
        # Entering the provider makes it close its HTTP client (no leaked sockets).
        async with OpenAIProvider(base_url=server.base_url, api_key="test") as provider:
            agent = Agent(OpenAIChatModel("gpt-4o", provider=provider))

            @agent.tool_plain
            def get_weather(city: str, days: int) -> str:
                """Get the weather forecast for a city."""
                tool_inputs.append({"city": city, "days": days})
                return f"sunny for {days} days in {city}"

            result = await agent.run("What is the weather in Paris?")

    assert result.output == "It is sunny in Paris."
    assert tool_inputs == [{"city": "Paris", "days": 3}]
    assert len(server.requests) == 2
    first, second = server.requests
    assert [tool["function"]["name"] for tool in first["tools"]] == ["get_weather"]
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == "call_pai_1"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == call.arguments
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1
    assert tool_messages[0]["tool_call_id"] == "call_pai_1"
    assert "sunny for 3 days in Paris" in tool_messages[0]["content"]
    assert server.errors == []


async def test_strands_openai_model_round_trips_a_tool_call():
    """Strands' real OpenAIModel runs the scripted tool once and returns the final text."""
    from strands import Agent, tool
    from strands.models.openai import OpenAIModel

    tool_inputs: list[dict[str, Any]] = []
    call = ToolCall(id="call_strands_1", name="get_weather", arguments={"city": "Oslo", "days": 2})

    @tool
    def get_weather(city: str, days: int) -> str:
        """Get the weather forecast for a city.

        Args:
            city: City name.
            days: Number of days.
        """
        tool_inputs.append({"city": city, "days": days})
        return f"snowy for {days} days in {city}"

    with FakeOpenAIServer(_tool_then_text(call, "It is snowy in Oslo.")) as server:
        model = OpenAIModel(
            client_args={"base_url": server.base_url, "api_key": "test"}, model_id="fake"
        )
        agent = Agent(model=model, tools=[get_weather], callback_handler=None)
        result = await agent.invoke_async("What is the weather in Oslo?")

    assert str(result).strip() == "It is snowy in Oslo."
    assert result.stop_reason == "end_turn"
    assert tool_inputs == [{"city": "Oslo", "days": 2}]
    assert len(server.requests) == 2
    first, second = server.requests
    assert first["stream"] is True
    assert [tool["function"]["name"] for tool in first["tools"]] == ["get_weather"]
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == "call_strands_1"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == call.arguments
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1
    assert tool_messages[0]["tool_call_id"] == "call_strands_1"
    assert "snowy for 2 days in Oslo" in json.dumps(tool_messages[0]["content"])
    assert server.errors == []
